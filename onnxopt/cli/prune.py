"""`onnxopt prune DIR -o OUT --sparsity S [--calib N] [--heads/--no-heads] [--ffn/--no-ffn] [--mask-only]`"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxopt.cli._shared import VERIFY_LOADING, show_verified
from onnxopt.prune.workflow import DEFAULT_CALIB, DEFAULT_FLOOR, prune
from onnxopt.report import render


def command(
    model: Path = typer.Argument(..., help="Unfused fp32 model folder (from `onnxopt export`)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write the pruned model to."),
    sparsity: float = typer.Option(..., help="Fraction of heads and of FFN neurons to remove, in [0, 1)."),
    calib: int = typer.Option(
        DEFAULT_CALIB,
        help="Calibration samples for scores and reconstruction (the embedded sentence corpus has 916).",
    ),
    calib_data: str | None = typer.Option(
        None, help="Calibration text: txt/csv/tsv/jsonl, dataset folder or name."
    ),
    text_column: str | None = typer.Option(None, help="Column(s) holding the text, for csv/jsonl data."),
    heads: bool = typer.Option(True, "--heads/--no-heads", help="Prune attention heads."),
    ffn: bool = typer.Option(True, "--ffn/--no-ffn", help="Prune FFN neurons."),
    mask_only: bool = typer.Option(False, help="Zero the pruned units but keep shapes (for inspection)."),
    per_layer_floor: float = typer.Option(
        DEFAULT_FLOOR, help="Each layer keeps at least this fraction of its units."
    ),
    seq_len: int = typer.Option(128, help="Truncate calibration samples to this many tokens."),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    verify_loading: bool = VERIFY_LOADING,
) -> None:
    """Remove attention heads and FFN neurons, re-fit the output projections, fold the weights."""
    with render.progress_bar() as progress:
        result = prune(
            model,
            output,
            sparsity,
            calib=calib,
            calib_data=calib_data,
            text_column=text_column,
            heads=heads,
            ffn=ffn,
            mask_only=mask_only,
            floor=per_layer_floor,
            seq_len=seq_len,
            overwrite=overwrite,
            verify_loading=verify_loading,
            on_progress=progress,
        )
    render.prune_result(result)
    show_verified(result)
