"""Execution providers: OpenVINO for real, CUDA's absence explained, selection by measurement,
tuned settings saved and reused, JSON and plot output."""

import json
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxopt.io import model_files
from onnxopt.runtime import selection
from onnxopt.runtime.config import BenchConfig
from onnxopt.runtime.measure import Timing, bench
from onnxopt.runtime.openvino_runtime import ROUTE_PLUGIN, ROUTE_RUNTIME
from onnxopt.runtime.providers import openvino_route
from onnxopt.runtime.sessions import SessionSettings, available, make_session, node_placement
from tests.conftest import assert_clean_error


def _intel_cpu() -> bool:
    if sys.platform == "linux":
        return "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    return "intel" in platform.processor().lower()


# OpenVINO's plugin wheel exists for x86-64 Linux and Windows and offers devices on Intel CPUs;
# OpenVINO's own runtime (the `openvino` wheel) runs on any x86-64 CPU. So OpenVINO must run on
# every x86-64 machine, never be skipped there: through the plugin on Intel, the runtime elsewhere.
X86_PLUGIN_PLATFORM = platform.machine() in ("x86_64", "AMD64") and sys.platform in ("linux", "win32")
INTEL_CPU = _intel_cpu()
OPENVINO_EXPECTED = X86_PLUGIN_PLATFORM
FAST = ("--runs", "2", "--min-time", "0", "--warmup", "1", "--seq-len", "16")


@pytest.fixture
def bert_copy(tiny_bert_onnx, tmp_path):
    """A private copy: these tests write the selection and tuned settings into the manifest."""
    return shutil.copytree(tiny_bert_onnx, tmp_path / "bert")


def _timing(model, provider, p50, batch=1, cosine=1.0):
    return Timing(
        model=model,
        provider=provider,
        batch=batch,
        seq=16,
        runs=3,
        p50_ms=p50,
        p90_ms=p50,
        p99_ms=p50,
        mean_ms=p50,
        throughput=batch * 1000 / p50,
        size_bytes=1,
        speedup=1.0,
        settings=SessionSettings(provider=provider).as_dict(),
        min_cosine_vs_cpu=cosine,
    )


@pytest.mark.skipif(not OPENVINO_EXPECTED, reason="OpenVINO runs on x86-64 Linux and Windows only")
def test_openvino_runs_for_real(tiny_bert_onnx):
    ok, why = available("openvino")
    assert ok, why
    ref = model_files.resolve(tiny_bert_onnx)
    report = bench([ref], [2], 16, runs=2, warmup=1, providers=["cpu", "openvino"])
    rows = {t.provider: t for t in report.timings}
    assert set(rows) == {"cpu", "openvino"}
    # Placement: onnxruntime's record of which provider got each node (the plugin), or the
    # layers OpenVINO executes, by precision (its own runtime).
    placed = rows["openvino"].nodes_by_provider
    assert placed and all(k.startswith("openvino") for k in placed), placed
    assert sum(rows["cpu"].nodes_by_provider.values()) == rows["cpu"].nodes_by_provider["cpu"] > 0
    route = ROUTE_PLUGIN if INTEL_CPU else ROUTE_RUNTIME
    assert rows["openvino"].route.startswith(route), rows["openvino"].route
    # Same inputs, same fp32 model: outputs agree closely (bf16 on CPUs with bf16 units included).
    assert rows["openvino"].min_cosine_vs_cpu > 0.99
    assert rows["openvino"].first_run_ms > 0


@pytest.mark.skipif(
    not (X86_PLUGIN_PLATFORM and INTEL_CPU), reason="the plugin offers devices on Intel CPUs only"
)
def test_openvino_reports_fallback_nodes(tiny_bert_dynamic):
    """Dynamic int8 uses contrib ops OpenVINO lacks: they must show up as CPU fallback, by op type."""
    session = make_session(
        model_files.resolve(tiny_bert_dynamic).onnx_path, "openvino", record_placement=True
    )
    counts, fallback = node_placement(session)
    assert counts.get("cpu", 0) > 0 and fallback
    assert sum(fallback.values()) == counts["cpu"]


@pytest.mark.skipif(not X86_PLUGIN_PLATFORM or INTEL_CPU, reason="needs an x86-64 CPU not made by Intel")
def test_openvino_on_a_non_intel_cpu_runs_through_its_own_runtime(cli, tiny_bert_onnx):
    ok, why = available("openvino")
    assert ok, why
    route, why = openvino_route()
    assert route == ROUTE_RUNTIME and "only on Intel CPUs" in why and "this CPU is" in why
    code, stdout, err = cli("bench", tiny_bert_onnx, "--ep", "openvino", "--batch", "1", *FAST)
    assert code == 0, err
    assert "openvino: ran through the OpenVINO runtime" in " ".join(stdout.split())


@pytest.mark.skipif(not X86_PLUGIN_PLATFORM, reason="OpenVINO runs on x86-64 Linux and Windows only")
def test_openvino_runtime_runs_qdq_in_int8_and_names_what_it_cannot_read(tiny_bert_onnx, tmp_path):
    from onnxopt.errors import OnnxoptError
    from onnxopt.quantize.workflow import quantize
    from onnxopt.runtime.openvino_runtime import OpenVinoSession

    quantize(tiny_bert_onnx, tmp_path / "qdq", mode="static", calib=4, target="openvino")
    session = OpenVinoSession(tmp_path / "qdq" / "model.onnx", "CPU", 1, {})
    layers = session.layer_precisions()
    assert any(k.startswith("FullyConnected") and k.endswith(("u8", "i8")) for k in layers), layers
    assert [i.type for i in session.get_inputs()] == ["tensor(int64)"] * len(session.get_inputs())
    feed = {i.name: np.ones((1, 8), np.int64) for i in session.get_inputs()}
    assert session.run(None, feed)[0].shape[:2] == (1, 8)
    quantize(tiny_bert_onnx, tmp_path / "cpu-layout", mode="static", calib=4)
    with pytest.raises(OnnxoptError, match="No conversion rule found for operations: com.microsoft"):
        OpenVinoSession(tmp_path / "cpu-layout" / "model.onnx", "CPU", 1, {})


def test_cuda_absence_is_explained(cli, tiny_bert_onnx, tmp_path):
    ok, why = available("cuda")
    if ok:
        pytest.skip("a GPU is present: the CUDA path is measured, not explained")
    assert "onnxruntime-gpu" in why or "GPU" in why
    out = tmp_path / "r.json"
    code, stdout, err = cli("bench", tiny_bert_onnx, "--ep", "all", "--batch", "1", *FAST, "--json", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert {u["provider"] for u in data["unavailable"]} >= {"cuda"}
    assert all(u["reason"] for u in data["unavailable"])
    assert "cuda: unavailable" in stdout
    code, _o, err = cli("bench", tiny_bert_onnx, "--ep", "cuda", *FAST)
    assert_clean_error(code, err, "none of the requested execution providers can run here", "cuda:")


def test_json_schema_and_selection(cli, bert_copy, tmp_path):
    out = tmp_path / "r.json"
    code, stdout, err = cli("bench", bert_copy, "--ep", "auto", "--batch", "1,2", *FAST, "--json", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert set(data) >= {"results", "unavailable", "selected"}
    keys = {"model", "provider", "batch", "seq", "p50_ms", "p90_ms", "p99_ms", "throughput", "first_run_ms"}
    for row in data["results"]:
        assert keys <= set(row)
        assert sum(row["nodes_by_provider"].values()) > 0
    model = str(bert_copy)
    chosen = data["selected"][model]
    smallest = [r for r in data["results"] if r["batch"] == 1 and r["model"] == model]
    assert min(r["p50_ms"] for r in smallest) == next(
        r["p50_ms"] for r in smallest if r["provider"] == chosen
    )
    # auto records the choice, with its session options, in the model's manifest.
    runtime = json.loads((bert_copy / "onnxopt.json").read_text())["runtime"]
    assert runtime["selected"]["provider"] == chosen
    assert f"selected for {model}: {chosen}" in stdout


def test_select_picks_fastest_at_smallest_batch_and_skips_drifting_outputs():
    timings = [
        _timing("a", "cpu", 10.0),
        _timing("a", "openvino", 6.0, cosine=0.97),  # faster, but its outputs drift: passed over
        _timing("a", "cuda", 8.0),
        _timing("a", "cpu", 100.0, batch=32),
        _timing("a", "cuda", 200.0, batch=32),
        _timing("b", "cpu", 5.0),
        _timing("b", "openvino", 4.0, cosine=0.9999),
    ]
    chosen = selection.select(timings)
    assert chosen["a"].provider == "cuda" and chosen["a"].batch == 1
    assert "openvino" in chosen["a"].passed_over and "0.97" in chosen["a"].passed_over["openvino"]
    assert chosen["b"].provider == "openvino" and not chosen["b"].passed_over
    everything_drifts = [_timing("c", "cpu", 9.0), _timing("c", "openvino", 1.0, cosine=0.5)]
    assert selection.select(everything_drifts)["c"].provider == "cpu"


def test_saved_settings_are_used_by_bench_and_eval(cli, bert_copy, tmp_path, monkeypatch):
    ref = model_files.resolve(bert_copy)
    tuned = SessionSettings(provider="cpu", intra_threads=1, opt_level="extended")
    assert selection.record_tuned(ref, {"cpu": tuned})
    assert selection.saved_settings(ref, "cpu") == tuned
    assert selection.saved_settings(ref, "cpu", threads=2).intra_threads == 2  # explicit wins
    out = tmp_path / "r.json"
    code, _o, err = cli("bench", bert_copy, "--batch", "1", *FAST, "--json", out)
    assert code == 0, err
    (row,) = json.loads(out.read_text())["results"]
    assert row["settings"] == tuned.as_dict()
    # A selection naming a provider this machine lacks falls back to CPU for eval, not a crash.
    manifest = ref.manifest
    manifest.runtime["selected"] = SessionSettings(provider="cuda").as_dict()
    manifest.save(bert_copy)
    if not available("cuda")[0]:
        assert selection.runtime_settings(ref).provider == "cpu"
    manifest.runtime["selected"] = tuned.as_dict()
    manifest.save(bert_copy)
    assert selection.runtime_settings(ref) == tuned
    code, stdout, err = cli("eval", bert_copy, "--reference", bert_copy, "--limit", 4)
    assert code == 0, err
    assert json.loads((bert_copy / "onnxopt.json").read_text())["steps"][-1]["provider"] == "cpu"


def test_tune_saves_the_best_settings(cli, bert_copy):
    code, stdout, err = cli("bench", bert_copy, "--tune", "--batch", "1", *FAST)
    assert code == 0, err
    assert "Tuning" in stdout
    manifest = json.loads((bert_copy / "onnxopt.json").read_text())
    best = SessionSettings.from_dict(manifest["runtime"]["tuned"]["cpu"])
    from onnxopt.runtime.tuning import candidates

    assert best in candidates("cpu")
    assert manifest["steps"][-1]["step"] == "tune"


def test_plot_draws_latency_and_accuracy(cli, bert_copy, tiny_bert_dynamic, tmp_path):
    dyn = shutil.copytree(tiny_bert_dynamic, tmp_path / "dyn")
    for folder, value in ((bert_copy, 80.0), (dyn, 79.5)):
        m = model_files.resolve(folder).manifest
        m.add_step("eval", task="sts", metric="spearman_x100", value=value)
        m.save(folder)
    plain, both = tmp_path / "plain.png", tmp_path / "both.png"
    code, _o, err = cli("bench", bert_copy, "--batch", "1,2", *FAST, "--plot", plain)
    assert code == 0, err
    code, _o, err = cli("bench", bert_copy, dyn, "--batch", "1,2", *FAST, "--plot", both)
    assert code == 0, err
    from PIL import Image

    for png in (plain, both):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Two models with accuracy add the latency-vs-accuracy panel: a wider picture.
    assert Image.open(both).size[0] > Image.open(plain).size[0] * 1.2
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["both.png", "plain.png"]


def test_pareto_front():
    from onnxopt.report.plots import pareto_front

    points = [(10.0, 80.0), (5.0, 79.0), (7.0, 78.0), (20.0, 80.5), (4.0, 70.0)]
    assert pareto_front(points) == [4, 1, 0, 3]
    assert pareto_front([(1.0, 20.0), (2.0, 30.0)], higher_is_better=False) == [0]
    assert pareto_front([(1.0, 30.0), (2.0, 20.0)], higher_is_better=False) == [0, 1]


def test_bad_provider_inputs(cli, tiny_bert_onnx, tmp_path):
    code, _o, err = cli("bench", tiny_bert_onnx, "--ep", "tpu")
    assert_clean_error(code, err, "unknown execution provider 'tpu'", "cpu, openvino, cuda")
    code, _o, err = cli("bench", tiny_bert_onnx, "--ep", ",")
    assert_clean_error(code, err, "--ep needs at least one provider")
    code, _o, err = cli("bench", tiny_bert_onnx, "--plot", tmp_path / "x.jpg")
    assert_clean_error(code, err, "--plot writes a PNG file")
    assert BenchConfig(ep="CPU, openvino,cpu").providers == ["cpu", "openvino"]
    with pytest.raises(Exception, match="unknown graph optimization level"):
        SessionSettings(opt_level="max")
    with pytest.raises(Exception, match="unknown OpenVINO device"):
        SessionSettings(provider="openvino", provider_options={"device": "TPU"})
    with pytest.raises(Exception, match="thread counts must be at least 1"):
        SessionSettings(intra_threads=0)


def test_corrupt_saved_settings_give_a_clean_error(cli, bert_copy):
    manifest = model_files.resolve(bert_copy).manifest
    manifest.runtime["tuned"] = {"cpu": {"provider": "cpu", "opt_level": "fastest"}}
    manifest.save(bert_copy)
    code, _o, err = cli("bench", bert_copy, "--batch", "1", *FAST)
    assert_clean_error(code, err, "unknown graph optimization level 'fastest'")


@pytest.mark.skipif(not X86_PLUGIN_PLATFORM, reason="OpenVINO runs on x86-64 Linux and Windows only")
def test_bench_times_what_openvino_can_read_and_says_what_it_cannot(
    monkeypatch, tiny_bert_onnx, tiny_bert_dynamic
):
    """Through OpenVINO's own runtime (forced here, as on AMD), the CPU-provider int8 layout does
    not load: that pair is reported with OpenVINO's reason, and every other pair is timed."""
    from onnxopt.runtime import providers

    monkeypatch.setattr(providers, "openvino_devices", lambda device="CPU": [])
    refs = [model_files.resolve(tiny_bert_onnx), model_files.resolve(tiny_bert_dynamic)]
    report = bench(refs, [1], 16, runs=2, warmup=1, providers=["cpu", "openvino"])
    pairs = {(Path(t.model).name, t.provider) for t in report.timings}
    assert pairs == {("fp32", "cpu"), ("fp32", "openvino"), ("dyn", "cpu")}
    reasons = [u.reason for u in report.unavailable if u.provider == "openvino"]
    assert len(reasons) == 1 and "dyn" in reasons[0] and "No conversion rule found" in reasons[0]
