"""Models on scratch files: for onnxruntime tools that only work on files (model in, model out,
through a temporary folder) and sessions on models past 2 GB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx

from onnxopt.io.leftovers import temp_dir
from onnxopt.silence import quiet


def write_temp_model(model: onnx.ModelProto, folder: Path, name: str = "in.onnx") -> Path:
    """`model` written into `folder`, unchanged in memory: past 2 GB its weights are streamed one
    tensor at a time (onnx.save_model would strip the raw data of the caller's model)."""
    from onnxopt.io.external_data import has_external, without_initializers, write_streamed
    from onnxopt.io.saving import is_large, write_model

    path = folder / name
    if is_large(model) or has_external(model):
        return write_streamed(without_initializers(model), model.graph.initializer, path)
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
