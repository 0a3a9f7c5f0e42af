"""Behaviour that differs by CPU, each branch tested on any machine with the features faked.

The project is built and tested on Intel with AMX, AMD with AVX512-VNNI and AMD with AVX2 only;
CI runs on whichever the session has, so no test may depend on the real CPU's branch:
- int8 weight range: full 8 bits with VNNI/AMX (or on ARM), 7 bits on x86 without VNNI;
- OpenVINO's plugin: a CPU device on Intel only; elsewhere it must say why.
"""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxopt.runtime import cpu, providers
from onnxopt.runtime.cpu import features_from

INTEL_AMX = "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n"
AMD_VNNI = "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
AMD_AVX2 = "flags\t\t: fpu sse2 sse4_2 avx avx2 fma bmi2\n"
ARM = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"


@pytest.mark.parametrize(
    "machine, cpuinfo, vnni, reduce_range",
    [
        ("x86_64", INTEL_AMX, True, False),
        ("x86_64", AMD_VNNI, True, False),
        ("x86_64", AMD_AVX2, False, True),
        ("aarch64", ARM, False, False),
        ("x86_64", "", False, True),  # /proc/cpuinfo unreadable: assume the safe 7-bit range
    ],
    ids=["intel-amx", "amd-avx512-vnni", "amd-avx2", "arm", "unknown-x86"],
)
def test_cpu_features_per_branch(machine, cpuinfo, vnni, reduce_range):
    features = features_from(machine, cpuinfo)
    assert features.vnni is vnni and features.reduce_range is reduce_range
    text = features.describe()
    assert ("7 bits" in text) is reduce_range
    if machine == "x86_64" and vnni:
        assert "avx512_vnni" in text


def _int8_weights(folder) -> list[np.ndarray]:
    model = onnx.load(str(folder / "model.onnx"))
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]


@pytest.mark.parametrize("cpuinfo, limit", [(AMD_AVX2, 64), (AMD_VNNI, 127)], ids=["avx2", "vnni"])
def test_int8_weight_range_follows_the_cpu(cli, tiny_bert_onnx, tmp_path, monkeypatch, cpuinfo, limit):
    """Without VNNI, u8 x s8 products summed in 16 bits (vpmaddubsw) can saturate, so weights get 7
    bits; with VNNI they use all 8. Faked here, so both branches run on every CPU."""
    import onnxopt.quantize.workflow as quantization

    monkeypatch.setattr(quantization, "cpu_features", lambda: features_from("x86_64", cpuinfo))
    out = tmp_path / "q"
    code, stdout, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out)
    assert code == 0, err
    step = json.loads((out / "onnxopt.json").read_text())["steps"][-1]
    assert step["reduce_range"] is (limit == 64)
    widest = max(int(np.abs(w.astype(np.int32)).max()) for w in _int8_weights(out))
    assert widest <= limit
    if limit == 127:
        assert widest > 64  # the full range is really used
    assert ("7 bits" in stdout) is (limit == 64)


@pytest.mark.parametrize("cpuinfo, levels", [(AMD_AVX2, 64), (AMD_VNNI, 127)], ids=["avx2", "vnni"])
def test_smoothing_simulates_the_weight_grid_of_the_cpu(
    tiny_bert_onnx, tmp_path, monkeypatch, cpuinfo, levels
):
    """Smoothing picks alpha by simulated int8 error; the weights it simulates must be those the
    quantizer writes on this CPU (7 bits without VNNI), or it picks for a grid that does not run."""
    import onnxopt.quantize.graph_steps as graph_steps
    import onnxopt.quantize.workflow as quantization
    from onnxopt.graph_queries.smooth_error import fake_quant_weight

    monkeypatch.setattr(quantization, "cpu_features", lambda: features_from("x86_64", cpuinfo))
    built = []
    real = graph_steps.Smooth
    monkeypatch.setattr(graph_steps, "Smooth", lambda *a, **k: built.append(k) or real(*a, **k))
    quantization.quantize(tiny_bert_onnx, tmp_path / "q", mode="static", calib=4, smooth=True)
    (kwargs,) = built
    assert kwargs["error"].keywords == {"weight_levels": levels}
    # The grid itself: every column's largest weight on the top level, the rest on its multiples.
    w = np.linspace(-1.0, 1.0, 64 * 3).reshape(64, 3) * np.array([1.0, 0.5, 2.0])
    grid = fake_quant_weight(w, levels) / (np.abs(w).max(0) / levels)
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-9)
    assert np.abs(grid).max() == levels


def test_the_real_cpu_is_one_of_the_branches():
    features = cpu.cpu_features()
    assert features.describe()  # whatever this machine is, it is described, and a branch applies
    assert features.reduce_range == (features.machine in ("x86_64", "AMD64") and not features.vnni)


@pytest.fixture
def fake_openvino(monkeypatch):
    """The machine as OpenVINO sees it, faked: (plugin installed, CPU vendor, devices the plugin
    offers, devices OpenVINO's own runtime offers)."""
    from onnxopt.runtime import openvino_runtime

    def fake(installed: bool, vendor: str, devices: list, runtime: list):
        monkeypatch.setattr(providers, "openvino_plugin", lambda: object() if installed else None)
        monkeypatch.setattr(providers, "cpu_vendor", lambda: vendor)
        monkeypatch.setattr(providers, "openvino_devices", lambda device="CPU": list(devices))
        monkeypatch.setattr(openvino_runtime, "runtime_devices", lambda: list(runtime))

    return fake


@pytest.mark.parametrize(
    "installed, vendor, devices, runtime, route, says",
    [
        (True, "Intel", ["CPU device"], ["CPU"], "onnxruntime plugin", "plugin offers OpenVINO's CPU device"),
        (True, "AMD", [], ["CPU"], "OpenVINO runtime", "only on Intel CPUs, and this CPU is AMD"),
        (True, "Intel", [], ["CPU"], "OpenVINO runtime", "found no CPU device"),
        (True, "AMD", [], [], "", "own runtime has no CPU device here"),
        (False, "AMD", [], [], "", "the OpenVINO plugin is not installed"),
    ],
    ids=["intel", "amd", "intel-without-device", "amd-without-runtime", "not-installed"],
)
def test_openvino_availability_per_branch(fake_openvino, installed, vendor, devices, runtime, route, says):
    import onnxruntime as ort

    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        pytest.skip("an onnxruntime build with OpenVINO built in: the plugin path does not decide")
    fake_openvino(installed, vendor, devices, runtime)
    available, why = providers.available("openvino")
    assert available is bool(route) and providers.openvino_route()[0] == route
    assert says in why


def test_openvino_on_a_faked_amd_cpu_through_bench(cli, fake_openvino, tiny_bert_onnx, tmp_path):
    model = shutil.copytree(tiny_bert_onnx, tmp_path / "m")
    args = (
        "--ep",
        "all",
        "--batch",
        "1",
        "--seq-len",
        "8",
        "--runs",
        "1",
        "--min-time",
        "0",
        "--warmup",
        "0",
    )
    fake_openvino(True, "AMD", [], [])
    code, stdout, err = cli("bench", model, *args)
    assert code == 0, err
    assert "openvino: unavailable" in stdout and "only on Intel CPUs" in stdout
