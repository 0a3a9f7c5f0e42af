"""Which execution providers can run here, and why not when one cannot.

OpenVINO comes as a plugin (`onnxruntime-ep-openvino`) registered with the plain `onnxruntime`
wheel at run time, so the two packages never ship the same files. A build that has OpenVINO
compiled in (the `onnxruntime-openvino` wheel) is used the classic way when present.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from onnxopt.errors import OnnxoptError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in PROVIDERS.items()}
OPENVINO_DEVICES = ("CPU", "GPU", "NPU")
_PLUGIN_REGISTRATION = "onnxopt-openvino"
_plugin_registered = False


def provider_name(short: str) -> str:
    key = short.strip().lower()
    if key not in PROVIDERS:
        raise OnnxoptError(f"unknown execution provider {short!r}", f"use one of: {', '.join(PROVIDERS)}")
    return PROVIDERS[key]


def gpu_present() -> bool:
    return bool(shutil.which("nvidia-smi")) or any(Path("/dev").glob("nvidia[0-9]*"))


def openvino_plugin():
    """The OpenVINO plugin module, registered with onnxruntime once per process; None if absent."""
    global _plugin_registered
    try:
        import onnxruntime_ep_openvino as plugin
    except ImportError:
        return None
    if not _plugin_registered:
        import onnxruntime as ort

        try:
            ort.register_execution_provider_library(_PLUGIN_REGISTRATION, plugin.get_library_path())
        except Exception as exc:  # already registered by this process, or a broken install
            if "already" not in str(exc).lower():
                return None
        _plugin_registered = True
    return plugin


def openvino_devices(device: str = "CPU") -> list:
    import onnxruntime as ort

    if openvino_plugin() is None:
        return []
    return [
        d
        for d in ort.get_ep_devices()
        if d.ep_name == PROVIDERS["openvino"]
        and d.ep_metadata.get("ov_device") == device
        and "ov_meta_device" not in d.ep_metadata
    ]


def cpu_vendor() -> str:
    """The CPU's vendor as onnxruntime sees it ("Intel", "AMD", ...); "" if it does not say."""
    import onnxruntime as ort

    for device in ort.get_ep_devices():
        if device.device.type == ort.OrtHardwareDeviceType.CPU:
            return device.device.vendor
    return ""


def openvino_route(device: str = "CPU") -> tuple[str, str]:
    """How OpenVINO runs here (the plugin, an onnxruntime build with it, or OpenVINO's own runtime)
    and why that route: or no route, and why not."""
    import onnxruntime as ort

    from onnxopt.runtime.openvino_runtime import ROUTE_BUILT_IN, ROUTE_PLUGIN, ROUTE_RUNTIME, runtime_devices

    if openvino_devices(device):
        return ROUTE_PLUGIN, f"the onnxruntime plugin offers OpenVINO's {device} device"
    # A registered plugin lists its provider too (on Intel), so only without one does the name mean
    # an onnxruntime build with OpenVINO inside: a plugin with no such device is not that build.
    plugin_module = openvino_plugin()
    if PROVIDERS["openvino"] in ort.get_available_providers() and plugin_module is None:
        return ROUTE_BUILT_IN, "onnxruntime here is a build with OpenVINO inside"
    if plugin_module is None:
        plugin = "the OpenVINO plugin is not installed"
    else:
        vendor = cpu_vendor()
        # The plugin's factory offers devices only on Intel hardware, CPUs included, though
        # OpenVINO's CPU plugin itself runs on AMD (onnxruntime PR #31981 lifts the check).
        plugin = (
            f"the onnxruntime plugin offers its CPU device only on Intel CPUs, and this CPU is {vendor}"
            if vendor and "intel" not in vendor.lower()
            else f"the onnxruntime plugin found no {device} device"
        )
    if device in runtime_devices():
        return ROUTE_RUNTIME, f"{plugin}; OpenVINO's own runtime runs the ONNX file"
    return "", (
        f"{plugin}, and OpenVINO's own runtime has no {device} device here"
        " (`pip install openvino`; `make install` does it)"
    )


def available(short: str) -> tuple[bool, str]:
    """Whether the provider can run here, and if not, why and how to get it."""
    import onnxruntime as ort

    name = provider_name(short)
    built_in = name in ort.get_available_providers()
    if short == "openvino":
        route, why = openvino_route()
        return bool(route), why
    if short == "cuda":
        if built_in and gpu_present():
            return True, ""
        if not built_in:
            return False, (
                f"onnxruntime {ort.__version__} here is a build without CUDA; on a machine with an NVIDIA "
                "GPU run `make install ORT=gpu` (onnxruntime-gpu in place of onnxruntime)"
            )
        return False, "onnxruntime-gpu is installed but no NVIDIA GPU or driver was found"
    return True, ""
