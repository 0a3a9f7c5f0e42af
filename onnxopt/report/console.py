"""The terminal: where tables go, how errors look, and progress.

Progress goes to stderr. On a terminal it is a live line per stage, cleared when the run ends;
elsewhere (CI logs, pipes) a live bar cannot be drawn and printing nothing left logs silent for
minutes, so each stage prints one plain line as it starts, prefixed with PROGRESS so that it
reads as progress, never as the error line (`onnxopt: error: ...`). -q prints no progress;
-v prints every stage as a plain line with the time the one before took.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

PROGRESS = "· "
# Piped or logged output (CI) gets 100 columns rather than rich's 80, and every line fits them:
# the tables fold their cells (150 made lines that logs and review tools wrap). A terminal, or
# COLUMNS, sets its own width.
LOG_WIDTH = 100
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else LOG_WIDTH)
err_console = Console(stderr=True)


@contextlib.contextmanager
def tables_on_stderr(active: bool = True) -> Iterator[None]:
    """Send tables to stderr while a run's stdout carries machine output (`--json -`)."""
    global console
    kept = console
    if active:
        console = err_console
    try:
        yield
    finally:
        console = kept


def out() -> Console:
    """Where tables go now (stdout, or stderr under tables_on_stderr)."""
    return console


def size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def error(message: str) -> None:
    """One line on stderr, no markup surprises, no wrapping."""
    sys.stderr.write(f"onnxopt: error: {message}\n")


class _Count(ProgressColumn):
    """done/total for counted stages; nothing for stages without a total (no `0/?`)."""

    def render(self, task) -> Text:
        return Text(
            f"{int(task.completed)}/{int(task.total)}" if task.total else "", style="progress.download"
        )


class _Bar(BarColumn):
    def render(self, task):
        return super().render(task) if task.total else Text("")


class _TimeLeft(TimeRemainingColumn):
    def render(self, task):
        return super().render(task) if task.total else Text("")


Update = Callable[[str, int, int], None]


@contextlib.contextmanager
def progress_bar(quiet: bool = False, verbose: bool = False) -> Iterator[Update]:
    """Yield a callback(stage, done, total); total 0 for stages without a count."""
    if quiet:
        yield lambda _stage, _done, _total: None
    elif verbose or not err_console.is_terminal:
        yield _plain_lines(timed=verbose)
    else:
        with _live() as update:
            yield update


# A counted stage (smoothing's groups, a large model's MatMuls) says how far it is this often,
# with the time left at its pace so far: a 1B model's stages run for minutes.
PLAIN_EVERY_S = 30.0


def _plain_lines(timed: bool) -> Update:
    started = {"stage": None, "at": time.perf_counter(), "said": time.perf_counter()}

    def update(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage == started["stage"]:
            if total and 0 < done < total and now - started["said"] >= PLAIN_EVERY_S:
                left = (now - started["at"]) / done * (total - done)
                sys.stderr.write(f"{PROGRESS}{stage} {done}/{total}, about {_minutes(left)} left\n")
                sys.stderr.flush()
                started["said"] = now
            return
        took = f" (previous stage {now - started['at']:.1f} s)" if timed and started["stage"] else ""
        counted = f" ({total})" if total else ""
        sys.stderr.write(f"{PROGRESS}{stage}{counted}{took}\n")
        sys.stderr.flush()
        started.update(stage=stage, at=now, said=now)

    return update


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


@contextlib.contextmanager
def _live() -> Iterator[Update]:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        _Bar(),
        _Count(),
        TimeElapsedColumn(),
        _TimeLeft(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                for other in tasks.values():
                    task = bar.tasks[other]
                    bar.update(other, completed=task.total or 1, total=task.total or 1)
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        yield update
