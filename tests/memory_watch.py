"""The suite's peak memory, printed at the end of every run (issue 26: a full `make test` beside
other work was once killed by the OOM killer, and the suite's own peak was not known).

A thread samples the resident memory of pytest and every process it started (CLI subprocesses,
Ray workers) a few times a second and keeps the largest sum, with the test running then. The bar
is 6 GB on the 24 GB machines CI runs on; the summary says when a run went past it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

BAR_BYTES = 6 * 1024**3
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    """ppid -> pids, read from /proc (one pass, no dependency)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name sits in parentheses and may hold spaces: the ppid follows the last ')'.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants."""
    tree, total, todo = _children(), 0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(tree.get(pid, []))
    return total


class MemoryWatch:
    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak, self.peak_test, self.current_test = 0, "", "(collection)"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def _run(self) -> None:
        root = os.getpid()
        while not self._stop.is_set():
            rss = tree_rss(root)
            if rss > self.peak:
                self.peak, self.peak_test = rss, self.current_test
            self._stop.wait(self.interval)

    def pytest_sessionstart(self, session) -> None:
        if Path("/proc/self/statm").exists():
            self._thread.start()

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        self.current_test = nodeid

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        over = " -- over the 6 GB bar" if self.peak > BAR_BYTES else ""
        terminalreporter.write_line(
            f"peak RSS of the suite (pytest and its subprocesses): {self.peak / 1024**3:.2f} GB"
            f" during {self.peak_test}{over}"
        )


def pytest_configure(config) -> None:
    config.pluginmanager.register(MemoryWatch(), "memory-watch")
