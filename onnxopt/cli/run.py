"""`onnxopt run RECIPE.yaml [-o OUT] [--model M] [--force]`"""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command

RECIPE = inspect.Parameter(
    "recipe_path",
    common.KW,
    annotation=Path,
    default=typer.Argument(..., metavar="RECIPE", help="Recipe file (YAML); see recipes/."),
)
EXTRAS = [
    inspect.Parameter(
        "output",
        common.KW,
        annotation=Path | None,
        default=typer.Option(
            None, "-o", "--output", help="Folder for every step's output (default: build/<recipe name>)."
        ),
    ),
    inspect.Parameter(
        "model",
        common.KW,
        annotation=str | None,
        default=typer.Option(
            None, "--model", help="Use this model (folder or hub id) instead of the recipe's."
        ),
    ),
    inspect.Parameter(
        "force",
        common.KW,
        annotation=bool,
        default=typer.Option(False, "--force", help="Run every step, even those already done."),
    ),
    common.JSON,
]


def run(
    _config: None,
    recipe_path: Path,
    output: Path | None,
    model: str | None,
    force: bool,
    json_path: Path | None,
) -> None:
    from onnxopt.recipes import runner, schema

    parsed = schema.load(recipe_path, model=model)  # checks --model as the recipe's own
    out = output or Path("build") / recipe_path.stem
    from onnxopt.recipes.checks import STATE_NAME

    # OUT is a run folder, never replaced whole: a report beside the steps is fine, not over one.
    common.check_json(json_path, [recipe_path], (out / STATE_NAME, *(out / s.name for s in parsed.steps)))

    common.RESUMABLE = common.Resumable(out, STATE_NAME, "the steps finished so far")
    with common.progress(f"run {parsed.name}") as progress:
        result = runner.run(
            parsed, out, on_step=lambda step: progress(step.name, 0, 0), on_progress=progress, force=force
        )
    from onnxopt.report import model_tables

    common.finish(result, json_path, model_tables.recipe_result)


command = make_command(
    None,
    run,
    "Run a recipe's steps (export, optimize, prune, quantize, eval, bench); unchanged steps are "
    "skipped on a rerun; a table compares every model it made.",
    arguments=[RECIPE],
    extras=EXTRAS,
)
