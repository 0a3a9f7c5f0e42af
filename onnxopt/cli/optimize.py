"""`onnxopt optimize DIR -o OUT`"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxopt.cli._shared import VERIFY_LOADING, show_verified
from onnxopt.optimize.workflow import optimize
from onnxopt.report import render


def command(
    model: Path = typer.Argument(..., help="Model folder (from `onnxopt export`) or .onnx file."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the optimized model."),
    atol: float = typer.Option(1e-3, help="Fail if outputs move by more than this from the input model's."),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    verify_loading: bool = VERIFY_LOADING,
) -> None:
    """Fuse transformer ops (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm) and check output parity."""
    with render.progress_bar() as progress:
        result = optimize(
            model, output, atol=atol, overwrite=overwrite, verify_loading=verify_loading, on_progress=progress
        )
    render.optimize_result(result)
    show_verified(result)
