"""`onnxopt optimize DIR -o OUT`"""

from __future__ import annotations

from pathlib import Path

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.optimize.config import OptimizeConfig


def run(config: OptimizeConfig, model: Path, output: Path, overwrite: bool, json_path: Path | None) -> None:
    common.check_json(json_path, [common.existing(model)], (output,))
    with common.progress(f"optimize {model}") as progress:
        from onnxopt.optimize.workflow import optimize

        result = optimize(model, output, config, overwrite=overwrite, on_progress=progress)
    from onnxopt.report import tables

    common.finish(result, json_path, tables.optimize_result)


command = make_command(
    OptimizeConfig,
    run,
    "Fuse transformer ops (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm) and check output parity.",
    arguments=[common.model_argument()],
    extras=[common.OUTPUT, common.OVERWRITE, common.JSON],
)
