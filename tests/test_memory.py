"""Per-step peak memory (onnxopt.memory): exact where a step raises the process's high-water mark,
the kernel's mark itself never reset (wait4 and /usr/bin/time keep reporting the whole run)."""

import numpy as np

from onnxopt import memory


def test_a_step_that_raises_the_mark_reads_it_and_the_mark_is_never_reset():
    before = memory.run_peak_mb()
    memory.start_step()
    block = np.ones(96 * 2**20 // 8)  # 96 MB, touched
    peak = memory.step_peak_mb()
    del block
    assert peak is not None and peak >= memory.run_peak_mb() - 1 and peak >= before
    memory.start_step()
    small = memory.step_peak_mb()
    assert small <= peak  # a later, smaller step: at most what it saw
    assert memory.run_peak_mb() >= peak - 1  # the run's mark keeps the big step (kernel rounding)


def test_steps_nest():
    memory.start_step()
    memory.start_step()
    inner = memory.step_peak_mb()
    outer = memory.step_peak_mb()
    assert inner is not None and outer is not None and memory.step_peak_mb() is None
