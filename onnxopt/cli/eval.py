"""`onnxopt eval DIR --reference REF_DIR [--data FILE] [--task sts|classification|qa|perplexity|fidelity]`"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxopt.evaluate.workflow import evaluate
from onnxopt.report import render


def command(
    model: Path = typer.Argument(..., help="Model folder to evaluate."),
    reference: Path | None = typer.Option(None, help="Reference model folder, e.g. the fp32 export."),
    task: str = typer.Option(
        "fidelity",
        help="fidelity (outputs vs --reference), sts (Spearman on pairs), classification (accuracy), "
        "qa (SQuAD exact match and F1) or perplexity (causal LM).",
    ),
    data: str | None = typer.Option(
        None,
        help="fidelity: text/csv/jsonl samples; sts: an STS .csv; classification: csv with a header; "
        "qa: SQuAD .json; perplexity: a text file.",
    ),
    limit: int = typer.Option(64, help="Samples to compare for fidelity."),
    text_column: str | None = typer.Option(None, help="Column(s) holding the text, for csv/jsonl data."),
    label_column: str = typer.Option("label", help="Column holding the label, for classification."),
    seq_len: int | None = typer.Option(
        None, help="Truncate inputs to this many tokens (default 128; qa 384)."
    ),
) -> None:
    """Measure output fidelity against a reference, or the task metric; results go to the manifest."""
    with render.progress_bar() as progress:
        progress("evaluating", 0, 0)
        result = evaluate(
            model,
            reference,
            task=task,
            data=data,
            limit=limit,
            seq_len=seq_len,
            text_column=text_column,
            label_column=label_column,
        )
    render.eval_result(result)
