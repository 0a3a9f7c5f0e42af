"""`onnxopt prune DIR -o OUT --sparsity S`"""

from __future__ import annotations

from pathlib import Path

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.prune.config import PruneConfig


def run(config: PruneConfig, model: Path, output: Path, overwrite: bool, json_path: Path | None) -> None:
    common.check_json(json_path, [common.existing(model)], (output,))
    with common.progress(f"prune {model} (sparsity {config.sparsity:g})") as progress:
        from onnxopt.prune.workflow import prune

        result = prune(model, output, config, overwrite=overwrite, on_progress=progress)
    from onnxopt.report import tables

    common.finish(result, json_path, tables.prune_result)


command = make_command(
    PruneConfig,
    run,
    "Remove attention heads and FFN neurons, re-fit the output projections, fold the weights.",
    arguments=[common.model_argument("Unfused fp32 model folder (from `onnxopt export`).")],
    extras=[common.OUTPUT, common.OVERWRITE, common.JSON],
)
