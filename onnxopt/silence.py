"""Silencing third-party tooling (onnxruntime, optimum, torch), which logs, warns and prints as
it works. onnxopt's own output goes through callbacks and the report layer, so nothing of ours is
lost here."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence third-party tooling (onnxruntime, optimum, torch), which logs, warns and prints as it works.

    Our own output goes through callbacks and the renderer, so nothing of ours is lost here.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null while native code runs: torch's exporter writes its
    whole graph from C++ on a failure (124 KB past sys.stdout, which `quiet` redirects), and
    that once corrupted `--json -`. A closed or unusable stdout is left as it is."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        _flush_c_stdio()  # what C code buffered goes to /dev/null, not to the restored stdout
        os.dup2(saved, 1)
        os.close(saved)


def _flush_c_stdio() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)
