"""`quantize --target auto`: both int8 layouts built and timed, the faster kept with its provider."""

import json

import pytest

from onnxopt.quantize import target_choice
from onnxopt.runtime.measure import BenchReport, Timing
from tests.conftest import assert_clean_error


def _timing(model, provider, batch, p50, cosine=1.0):
    return Timing(
        model,
        provider,
        batch,
        128,
        10,
        p50,
        p50,
        p50,
        p50,
        batch / p50,
        1,
        1.0,
        settings={"provider": provider},
        min_cosine_vs_cpu=cosine,
    )


class _Ref:
    def __init__(self, name):
        self.name = name


def _choose(monkeypatch, timings, providers=("cpu", "openvino")):
    monkeypatch.setattr(target_choice, "bench", lambda *a, **k: BenchReport(timings))
    monkeypatch.setattr(target_choice, "available", lambda p: (p in providers, f"no {p} here"))
    return target_choice.choose([_Ref("cpu"), _Ref("openvino")], 128)


def _grid(p50: dict, cosine: dict | None = None) -> list:
    """Timings from {(layout, provider): (p50 at batch 1, p50 at batch 32)}."""
    cosine = cosine or {}
    return [
        _timing(layout, provider, batch, ms, cosine.get((layout, provider), 1.0))
        for (layout, provider), pair in p50.items()
        for batch, ms in zip((1, 32), pair, strict=True)
    ]


BOTH_ON_CPU = {("cpu", "cpu"): (7.0, 250.0), ("openvino", "cpu"): (24.0, 360.0)}


def test_auto_keeps_the_layout_faster_over_both_batch_sizes(monkeypatch):
    # The cpu layout wins batch 1 by 2 ms, the openvino layout batch 32 by 2x: geometric mean decides.
    p50 = {**BOTH_ON_CPU, ("cpu", "openvino"): (17.0, 340.0), ("openvino", "openvino"): (9.0, 125.0)}
    choice = _choose(monkeypatch, _grid(p50))
    assert (choice.chosen, choice.provider) == ("openvino", "openvino")
    assert "cpu layout on cpu: b1 7.0 ms, b32 250.0 ms" in choice.why
    # Slower at batch 32 than the cpu layout's 7.0 x 250.0: the cpu layout stays.
    p50[("openvino", "openvino")] = (9.0, 260.0)
    assert _choose(monkeypatch, _grid(p50)).chosen == "cpu"


def test_auto_passes_over_a_provider_whose_outputs_drift(monkeypatch):
    p50 = {**BOTH_ON_CPU, ("openvino", "openvino"): (1.0, 10.0)}
    choice = _choose(monkeypatch, _grid(p50, {("openvino", "openvino"): 0.5}))
    assert choice.chosen == "cpu"
    assert "openvino layout on cpu" in choice.why  # its best eligible provider


def test_auto_without_openvino_says_why(monkeypatch):
    choice = _choose(monkeypatch, _grid(BOTH_ON_CPU), providers=("cpu",))
    assert choice.chosen == "cpu" and "OpenVINO unavailable here: no openvino here" in choice.why


@pytest.mark.slow
def test_auto_writes_one_layout_and_records_its_provider(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "auto"
    code, stdout, err = cli(
        "quantize", tiny_bert_onnx, "--static", "--calib", 4, "--target", "auto", "-o", out
    )
    assert code == 0, err
    assert "target auto: kept the" in stdout
    assert not [p for p in out.iterdir() if p.is_dir()]  # the other layout is gone
    manifest = json.loads((out / "onnxopt.json").read_text())
    auto = manifest["steps"][-1]
    assert auto["step"] == "target-auto" and auto["chosen"] in target_choice.LAYOUTS
    assert manifest["steps"][-2]["target"] == auto["chosen"]  # the kept model is that layout
    assert manifest["runtime"]["selected"]["provider"] == auto["provider"]
    assert set(auto["p50_ms"]) == set(target_choice.LAYOUTS)
    assert not list(tmp_path.glob(".auto*"))  # nothing staged is left beside OUT


def test_auto_refuses_a_decoder(cli, tiny_gpt2_onnx, tmp_path):
    code, _out, err = cli("quantize", tiny_gpt2_onnx, "--dynamic", "--target", "auto", "-o", tmp_path / "q")
    assert_clean_error(code, err, "--target auto times encoder layouts", "--target cpu")
    assert not (tmp_path / "q").exists()
