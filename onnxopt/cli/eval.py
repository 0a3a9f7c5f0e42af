"""`onnxopt eval DIR --reference REF_DIR [--data FILE] [--task fidelity|sts]`"""

from __future__ import annotations

from pathlib import Path

import typer

from .. import render
from ..evaluation import evaluate


def command(
    model: Path = typer.Argument(..., help="Model folder to evaluate."),
    reference: Path | None = typer.Option(None, help="Reference model folder, e.g. the fp32 export."),
    task: str = typer.Option(
        "fidelity", help="fidelity (outputs vs --reference) or sts (Spearman on pairs)."
    ),
    data: str | None = typer.Option(None, help="Samples: text/csv/jsonl for fidelity; an STS .csv for sts."),
    limit: int = typer.Option(64, help="Samples to compare for fidelity."),
    text_column: str | None = typer.Option(None, help="Column(s) holding the text, for csv/jsonl data."),
    seq_len: int = typer.Option(128, help="Truncate inputs to this many tokens."),
) -> None:
    """Measure output fidelity against a reference, or the task metric; results go to the manifest."""
    with render.progress_bar() as progress:
        progress("evaluating", 0, 0)
        result = evaluate(
            model, reference, task=task, data=data, limit=limit, seq_len=seq_len, text_column=text_column
        )
    render.eval_result(result)
