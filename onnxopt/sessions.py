"""Building onnxruntime inference sessions for one execution provider."""

from __future__ import annotations

from pathlib import Path

from .errors import OnnxoptError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}
_HOW_TO_GET = {
    "openvino": "install the onnxruntime-openvino wheel (x86-64 Linux/Windows)",
    "cuda": "install onnxruntime-gpu on a machine with an NVIDIA GPU and CUDA",
}


def provider_name(short: str) -> str:
    key = short.strip().lower()
    if key not in PROVIDERS:
        raise OnnxoptError(f"unknown execution provider {short!r}", f"use one of: {', '.join(PROVIDERS)}")
    return PROVIDERS[key]


def available(short: str) -> tuple[bool, str]:
    """Whether the provider can run here, and if not, why and how to get it."""
    import onnxruntime as ort

    name = provider_name(short)
    if name in ort.get_available_providers():
        return True, ""
    return (
        False,
        f"{name} is not in this onnxruntime build; {_HOW_TO_GET.get(short, 'reinstall onnxruntime')}",
    )


def probe_session(model, tensors: list[str], provider: str = "cpu"):
    """A session on `model` with the intermediate `tensors` exposed as extra outputs (float)."""
    import tempfile

    import onnx

    from .passes._files import write_temp_model

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(prefix="onnxopt-probe-") as tmp:
        return make_session(write_temp_model(probe, Path(tmp)), provider)


def make_session(
    onnx_path: Path | bytes, provider: str = "cpu", threads: int | None = None, profile: bool = False
):
    """One session on one provider. Threads: intra-op count (None lets onnxruntime pick); inter-op is 1."""
    import onnxruntime as ort

    ok, why = available(provider)
    if not ok:
        raise OnnxoptError(f"execution provider {provider} is unavailable", why)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.enable_profiling = profile
    try:
        source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
        return ort.InferenceSession(source, options, providers=[provider_name(provider)])
    except Exception as exc:
        what = "the model" if isinstance(onnx_path, bytes) else str(onnx_path)
        first = str(exc).splitlines()[0][:200]
        raise OnnxoptError(
            f"onnxruntime cannot load {what}: {first}",
            "check the model with `onnxopt inspect`, or export it again",
        ) from exc
