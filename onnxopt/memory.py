"""This process's peak resident memory, step by step.

Linux keeps a high-water mark (VmHWM) and resets it on request (5 written to
/proc/self/clear_refs), so each step reads its own peak, not the run's so far; the run's peak is
kept here across resets. Where /proc is missing or the reset is refused, steps read None rather
than a figure that would be the run's peak in disguise.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
_run_peak_kb = 0
_reset_works: bool | None = None


def _high_water_kb() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def start_step() -> None:
    """Begin a step: the run's peak so far is kept, the high-water mark reset."""
    global _run_peak_kb, _reset_works
    high = _high_water_kb()
    if high is None:
        return
    _run_peak_kb = max(_run_peak_kb, high)
    try:
        _CLEAR.write_text("5")
        _reset_works = True
    except OSError:
        _reset_works = False


def step_peak_mb() -> float | None:
    """The peak since `start_step`, in MB; None where it cannot be told apart from the run's."""
    global _run_peak_kb
    high = _high_water_kb()
    if high is None or not _reset_works:
        return None
    _run_peak_kb = max(_run_peak_kb, high)
    return round(high / 1024, 1)


def run_peak_mb() -> float | None:
    """The process's peak so far, resets included, in MB."""
    high = _high_water_kb()
    if high is None:
        return None
    return round(max(_run_peak_kb, high) / 1024, 1)


def release() -> None:
    """Collect cycles and hand freed heap back to the system (glibc's malloc_trim): a model just
    dropped still counted in RSS otherwise, and the next step's peak stacked on top of it."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
