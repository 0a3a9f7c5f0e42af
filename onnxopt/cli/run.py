"""`onnxopt run RECIPE.yaml [-o OUT] [--model M] [--force]`"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxopt.recipes import runner
from onnxopt.recipes import schema as recipe
from onnxopt.report import render


def command(
    recipe_path: Path = typer.Argument(..., help="Recipe file (YAML); see recipes/."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Folder for every step's output (default: build/<recipe name>)."
    ),
    model: str | None = typer.Option(None, "--model", help="Use this model (folder or hub id) instead."),
    force: bool = typer.Option(False, "--force", help="Run every step, even those already done."),
) -> None:
    """Run a recipe's steps (export, optimize, prune, quantize, eval, bench); unchanged steps are
    skipped on a rerun; a table compares every model it made."""
    parsed = recipe.load(recipe_path, model=model)  # checks --model as the recipe's own
    out = output or Path("build") / recipe_path.stem
    with render.progress_bar() as progress:
        result = runner.run(
            parsed,
            out,
            on_step=lambda step: progress(f"{step.name}", 0, 0),
            on_progress=progress,
            force=force,
        )
    render.recipe_result(result)
