"""Bridge for onnxruntime tools that only work on files: model in, model out, via a temp folder."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx

from ..leftovers import temp_dir


def write_temp_model(model: onnx.ModelProto, folder: Path, name: str = "in.onnx") -> Path:
    from ..modelio import write_model

    path = folder / name
    write_model(model, path)
    return path


def through_files(model: onnx.ModelProto, tool: Callable[[Path, Path], None]) -> onnx.ModelProto:
    """Run `tool(input_path, output_path)` on a temporary copy and load what it wrote."""
    with temp_dir("tool") as tmp:
        src = write_temp_model(model, Path(tmp))
        dst = Path(tmp) / "out.onnx"
        with quiet():
            tool(src, dst)
        return onnx.load(str(dst))


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
