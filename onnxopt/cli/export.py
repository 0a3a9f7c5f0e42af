"""`onnxopt export [MODEL] -o DIR`"""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.export.config import ExportConfig

SOURCE = inspect.Parameter(
    "model",
    common.KW,
    annotation=str | None,
    default=typer.Argument(
        None,
        metavar="[MODEL]",
        help="Local Hugging Face folder, GGUF file or hub id; "
        "default: the bundled all-MiniLM-L6-v2 (or --bundled smollm2).",
    ),
)


def run(
    config: ExportConfig, model: str | None, output: Path, overwrite: bool, json_path: Path | None
) -> None:
    common.check_json(json_path, [Path(model)] if model and Path(model).exists() else [], (output,))
    from onnxopt.export.sources import resolve_source

    # The source (a GGUF file's header included) is checked before the workflow imports torch and
    # transformers: a damaged file answers in a fraction of a second, not after 15.
    resolve_source(model, config.bundled)
    with common.progress(f"export {model or config.bundled or 'the bundled all-MiniLM-L6-v2'}") as progress:
        from onnxopt.export.workflow import export  # torch and optimum: seconds to import

        result = export(model, output, config, overwrite=overwrite, on_progress=progress)
    from onnxopt.report import tables

    common.finish(result, json_path, tables.export_result)


command = make_command(
    ExportConfig,
    run,
    "Export a Hugging Face model to ONNX and check it against PyTorch.",
    arguments=[SOURCE],
    extras=[common.OUTPUT, common.OVERWRITE, common.JSON],
)
