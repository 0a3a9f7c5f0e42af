"""`onnxopt eval DIR [--reference REF] [--task fidelity|sts|classification|qa|perplexity] [--data FILE]`"""

from __future__ import annotations

from pathlib import Path

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.evaluate.config import EvalConfig


def run(config: EvalConfig, model: Path, json_path: Path | None) -> None:
    inputs = [common.existing(model)] + (
        [common.existing(Path(config.reference))] if config.reference else []
    )
    common.check_json(json_path, inputs)
    with common.progress(f"eval {model} ({config.task})") as progress:
        from onnxopt.evaluate.workflow import evaluate

        result = evaluate(model, config, on_progress=progress)
    from onnxopt.report import model_tables

    common.finish(result, json_path, model_tables.eval_result)


command = make_command(
    EvalConfig,
    run,
    "Measure output fidelity against a reference, or a task metric; results go to the manifest.",
    arguments=[common.model_argument("Model folder to evaluate.")],
    extras=[common.JSON],
)
