"""`onnxopt quantize DIR -o OUT (--dynamic | --static [--calib N])`"""

from __future__ import annotations

from pathlib import Path

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.quantize.config import QuantizeConfig


def run(config: QuantizeConfig, model: Path, output: Path, overwrite: bool, json_path: Path | None) -> None:
    common.check_json(json_path, [common.existing(model)], (output,))
    kind = "int4" if config.mode == "int4" else f"{config.mode} int8"
    with common.progress(f"quantize {model} ({kind})") as progress:
        from onnxopt.quantize.entry import quantize_model

        result = quantize_model(model, output, config, overwrite=overwrite, on_progress=progress)
    from onnxopt.report import tables

    common.finish(result, json_path, tables.quantize_result)


command = make_command(
    QuantizeConfig,
    run,
    "Quantize a model: int8 (dynamic or static) or int4 weight-only.",
    arguments=[common.model_argument()],
    extras=[common.OUTPUT, common.OVERWRITE, common.JSON],
)
