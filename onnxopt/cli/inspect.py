"""`onnxopt inspect DIR|FILE [--nodes]`"""

from __future__ import annotations

from pathlib import Path

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.evaluate.inspect_config import InspectConfig


def run(config: InspectConfig, model: Path, json_path: Path | None) -> None:
    common.check_json(json_path, [common.existing(model)])
    from onnxopt.evaluate.summary import summarize
    from onnxopt.report import model_tables

    common.finish(summarize(model, with_nodes=config.nodes), json_path, model_tables.summary)


command = make_command(
    InspectConfig,
    run,
    "Show op types, parameters, size, inputs/outputs, opset/IR, and whether it is quantized or pruned.",
    arguments=[common.model_argument("Model folder or .onnx file.")],
    extras=[common.JSON],
)
