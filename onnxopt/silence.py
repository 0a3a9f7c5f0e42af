"""Silencing third-party tooling (onnxruntime, optimum, torch), which logs, warns and prints as
it works. onnxopt's own output goes through callbacks and the report layer, so nothing of ours is
lost here."""

from __future__ import annotations

import contextlib
import io
import logging
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
