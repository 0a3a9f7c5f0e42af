"""Per-step peak memory (onnxopt.memory): exact where a step raises the process's high-water mark,
the kernel's mark itself never reset (wait4 and /usr/bin/time keep reporting the whole run)."""

import numpy as np

from onnxopt import memory


def test_a_step_reads_its_own_peak_and_the_mark_is_never_reset():
    before = memory.run_peak_mb()
    memory.start_step()
    block = np.ones(96 * 2**20 // 8)  # 96 MB, touched
    peak = memory.step_peak_mb()
    del block
    after = memory.run_peak_mb()
    assert after >= before  # never reset: wait4 and /usr/bin/time still see the whole run
    assert peak is not None and 96 <= peak <= after + 1  # at least the block; never above the run
    if after > before + 1:  # the step raised the process's mark: its peak is that mark, exactly
        assert peak >= after - 1
    memory.start_step()
    assert memory.step_peak_mb() <= after + 1


def test_steps_nest():
    memory.start_step()
    memory.start_step()
    inner = memory.step_peak_mb()
    outer = memory.step_peak_mb()
    assert inner is not None and outer is not None and memory.step_peak_mb() is None
