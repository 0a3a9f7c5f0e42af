"""What the CPU offers for int8, which decides the quantization types."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    machine: str
    vnni: bool
    flags: tuple[str, ...]

    @property
    def reduce_range(self) -> bool:
        # Without VNNI, x86 int8 kernels multiply u8 x s8 with vpmaddubsw, whose 16-bit sums can
        # saturate; 7-bit weights avoid that. VNNI (and ARM) accumulate in 32 bits, so full range.
        return self.machine in ("x86_64", "AMD64") and not self.vnni

    def describe(self, activations: str = "u8") -> str:
        """The int8 types on this CPU; `activations`: what the layout uses (s8 for OpenVINO)."""
        if self.machine not in ("x86_64", "AMD64"):
            return f"{self.machine}: {activations} activations, s8 weights, full range"
        found = ", ".join(f for f in _VNNI_FLAGS if f in self.flags) or "none"
        if self.vnni:
            return f"x86-64 with VNNI ({found}): {activations} activations, s8 weights, full 8-bit range"
        weights = "s8 weights reduced to 7 bits to avoid saturation"
        return f"x86-64 without VNNI: {activations} activations, {weights}"


def features_from(machine: str, cpuinfo: str) -> CpuFeatures:
    """The features of a CPU described by `platform.machine()` and /proc/cpuinfo's text: a pure
    function, so every branch (AMX, AVX512-VNNI, AVX2 only, ARM) is tested on any machine."""
    flags: tuple[str, ...] = ()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            flags = tuple(line.split(":", 1)[1].split())
            break
    return CpuFeatures(machine=machine, vnni=any(f in flags for f in _VNNI_FLAGS), flags=flags)


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return features_from(platform.machine(), cpuinfo)
