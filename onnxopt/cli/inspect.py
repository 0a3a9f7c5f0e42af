"""`onnxopt inspect DIR|FILE`"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxopt.evaluate.summary import summarize
from onnxopt.report import render


def command(
    model: Path = typer.Argument(..., help="Model folder or .onnx file."),
    nodes: bool = typer.Option(False, "--nodes", help="Also list every node's name and op type."),
) -> None:
    """Show op types, parameters, size, inputs/outputs, opset/IR, and whether it is quantized or pruned."""
    render.summary(summarize(model, with_nodes=nodes))
