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


def available(short: str) -> tuple[bool, str]:
    """Whether the provider can run here, and if not, why and how to get it."""
    import onnxruntime as ort

    name = provider_name(short)
    built_in = name in ort.get_available_providers()
    if short == "openvino":
        if openvino_devices() or built_in:
            return True, ""
        if openvino_plugin() is None:
            return False, (
                "the OpenVINO plugin is not installed; `pip install onnxruntime-ep-openvino` "
                "(x86-64 Linux or Windows; `make install` does it there)"
            )
        vendor = cpu_vendor()
        if vendor and "intel" not in vendor.lower():
            # The plugin's factory offers devices only on Intel hardware, CPUs included, though
            # OpenVINO's CPU plugin itself runs on AMD (onnxruntime PR #31981 lifts the check).
            return False, (
                f"the OpenVINO plugin offers its CPU device only on Intel CPUs, and this CPU is {vendor} "
                "(onnxruntime PR #31981 lifts that)"
            )
        return False, "the OpenVINO plugin is installed but found no CPU device on this machine"
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
