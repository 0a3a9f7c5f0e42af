"""`onnxopt export [MODEL] -o DIR`"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxopt.cli._shared import VERIFY_LOADING, show_verified
from onnxopt.export.workflow import export
from onnxopt.report import render


def command(
    model: str | None = typer.Argument(
        None, help="Local Hugging Face folder or hub id; default: bundled all-MiniLM-L6-v2."
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Folder to write model.onnx, tokenizer and manifest to."
    ),
    task: str = typer.Option("auto", help="optimum task, e.g. feature-extraction, text-classification."),
    opset: int | None = typer.Option(None, help="ONNX opset (default: optimum's choice for the model)."),
    atol: float = typer.Option(1e-4, help="Fail if ONNX and PyTorch outputs differ by more than this."),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    verify_loading: bool = VERIFY_LOADING,
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub to run."),
) -> None:
    """Export a Hugging Face model to ONNX and check it against PyTorch."""
    with render.progress_bar() as progress:
        result = export(
            model,
            output,
            task=task,
            opset=opset,
            atol=atol,
            overwrite=overwrite,
            verify_loading=verify_loading,
            trust_remote_code=trust_remote_code,
            on_stage=lambda msg: progress(msg, 0, 0),
        )
    render.export_result(result)
    show_verified(result)
