"""OpenVINO's own runtime behind the few session calls onnxopt makes, for CPUs the onnxruntime
plugin does not serve.

The `onnxruntime-ep-openvino` plugin offers its CPU device on Intel CPUs only (its factory checks
the vendor; onnxruntime PR #31981 lifts that), though OpenVINO's CPU plugin runs on any x86-64:
on a 2-core AMD EPYC (2026-12-02) `openvino.Core().compile_model(onnx_path, "CPU")` ran MiniLM's
fp32 graph and QDQ int8 graphs with int8 FullyConnected layers. So where the plugin offers no
device, `--ep openvino` reads the ONNX file with OpenVINO itself. The provider options are the
plugin's: `num_of_threads`, and `load_config` as JSON `{"CPU": {...}}` of OpenVINO properties.

Precision: OpenVINO runs fp32 graphs in bf16 on CPUs with bf16 units unless told
INFERENCE_PRECISION_HINT f32; onnxopt keeps OpenVINO's defaults, as a user of OpenVINO gets them,
and the bench's drift-vs-CPU columns show what that costs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError, first_line

ROUTE_PLUGIN = "onnxruntime plugin"
ROUTE_BUILT_IN = "onnxruntime-openvino build"
ROUTE_RUNTIME = "OpenVINO runtime"
_TYPES = {
    "i64": "int64",
    "i32": "int32",
    "f32": "float",
    "f16": "float16",
    "u8": "uint8",
    "i8": "int8",
    "boolean": "bool",
}


def runtime_devices() -> list[str]:
    """Devices OpenVINO's own runtime offers here; empty when the `openvino` package is absent."""
    try:
        import openvino as ov
    except ImportError:
        return []
    try:
        return list(ov.Core().available_devices)
    except Exception:  # a broken install: treated as absent, with the reason from available()
        return []


def runtime_version() -> str:
    import openvino as ov

    return ov.__version__.split("-")[0]


def _reason(exc: Exception) -> str:
    """The line of OpenVINO's report that says what failed: its summary of unconverted ops when
    there is one (the first lines are only source locations)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for marker in ("No conversion rule found", "Conversion is failed", "Unsupported"):
        found = next((line.lstrip("- ") for line in lines if marker in line), None)
        if found:
            return found[:200]
    informative = [line for line in lines if not line.startswith("Exception from ")]
    return (informative[-1] if informative else first_line(exc, 200))[:200]


@dataclass(frozen=True)
class _Arg:
    """The part of onnxruntime's NodeArg that onnxopt reads."""

    name: str
    type: str
    shape: list


def _config(options: dict[str, str], device: str, threads: int | None) -> dict:
    config = dict(json.loads(options["load_config"]).get(device, {})) if "load_config" in options else {}
    threads = options.get("num_of_threads") or threads
    if threads:
        config.setdefault("INFERENCE_NUM_THREADS", int(threads))
    return config


class OpenVinoSession:
    """A compiled OpenVINO model answering `run`, `get_inputs`, `get_outputs` and `get_providers`
    as an onnxruntime session does; `layer_precisions` says what OpenVINO executes, in which type."""

    route = ROUTE_RUNTIME

    def __init__(self, source: Path | bytes, device: str, threads: int | None, options: dict[str, str]):
        import openvino as ov

        core = ov.Core()
        try:
            if isinstance(source, bytes):
                model = core.read_model(source, b"")
            else:
                model = core.read_model(str(source))
            self.compiled = core.compile_model(model, device, _config(options, device, threads))
        except Exception as exc:
            raise OnnxoptError(
                f"OpenVINO {runtime_version()} cannot compile the model for {device}: {_reason(exc)}",
                "OpenVINO reads standard ONNX ops and QDQ: quantize with --target openvino for it",
            ) from exc
        self.request = self.compiled.create_infer_request()
        self.inputs = [self._arg(port) for port in self.compiled.inputs]
        self.outputs = [self._arg(port) for port in self.compiled.outputs]

    @staticmethod
    def _arg(port) -> _Arg:
        kind = _TYPES.get(port.get_element_type().get_type_name(), "float")
        shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        return _Arg(port.get_any_name(), f"tensor({kind})", shape)

    def get_inputs(self) -> list[_Arg]:
        return self.inputs

    def get_outputs(self) -> list[_Arg]:
        return self.outputs

    def get_providers(self) -> list[str]:
        return ["OpenVINOExecutionProvider"]

    def run(self, names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        wanted = names or [o.name for o in self.outputs]
        known = {i.name for i in self.inputs}
        results = self.request.infer({k: v for k, v in feed.items() if k in known})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return [np.array(by_name[name], copy=True) for name in wanted]

    def layer_precisions(self) -> dict[str, int]:
        """Executed layers by type and precision ("FullyConnected u8": 36), constants and
        reorders left out: what tells whether int8 layers really run in int8."""
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name()
            if layer in ("Const", "Input", "Parameter", "Output", "Result", "Reorder"):
                continue
            precision = str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else "?"
            key = f"{layer} {precision}"
            counts[key] = counts.get(key, 0) + 1
        return counts
