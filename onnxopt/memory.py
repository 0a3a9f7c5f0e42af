"""This process's peak resident memory, step by step, without touching the kernel's own mark.

The kernel keeps one high-water mark per process (VmHWM; what /usr/bin/time and wait4 report).
Resetting it per step (/proc/self/clear_refs) made those tools report the last step's peak as the
whole run's: a 1B int4 quantize read 2.8 GB in wait4 while one of its steps peaked at 5.5 GB.
So a step's peak is the mark itself when the step raised it (exact), and otherwise the highest RSS
a sampling thread saw during the step (every 20 ms; a lower bound, below the run's peak anyway).
Where /proc is missing, steps read None.
"""

from __future__ import annotations

import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")
_SAMPLE_S = 0.02


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _Step:
    def __init__(self):
        self.mark = _status_kb("VmHWM:")
        self.seen = _status_kb("VmRSS:") or 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(_SAMPLE_S):
            self.seen = max(self.seen, _status_kb("VmRSS:") or 0)

    def stop(self) -> float | None:
        self.done.set()
        self.thread.join()
        mark = _status_kb("VmHWM:")
        if mark is None or self.mark is None:
            return None
        peak = mark if mark > self.mark else max(self.seen, _status_kb("VmRSS:") or 0)
        return round(peak / 1024, 1)


_steps: list[_Step] = []  # a pass may run a pipeline of its own: steps nest


def start_step() -> None:
    """Begin measuring a step; `step_peak_mb` ends the latest one begun."""
    if _STATUS.exists():
        _steps.append(_Step())


def step_peak_mb() -> float | None:
    """The peak of the latest step begun by `start_step`, in MB (module doc); None without /proc."""
    return _steps.pop().stop() if _steps else None


def run_peak_mb() -> float | None:
    """The process's peak so far (the kernel's mark), in MB."""
    high = _status_kb("VmHWM:")
    return None if high is None else round(high / 1024, 1)


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
