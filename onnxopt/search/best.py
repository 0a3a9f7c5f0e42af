"""`OUT/best`: the fastest model within the budget, with the recipe that rebuilds it exactly
(`onnxopt run OUT/best/recipe.yaml -o DIR`): the input folder as the recipe's model, each step
with the options the trial used, and an eval step that scores it against the input again."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from onnxopt.io.outputs import staged_dir
from onnxopt.search.jobs import EvalSpec
from onnxopt.search.trials import Trial

BEST = "best"
RECIPE = "recipe.yaml"


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def recipe_text(trial: Trial, model: Path, spec: EvalSpec) -> str:
    steps = []
    settings = trial.settings
    if settings.get("prune"):
        steps.append({"prune": {k: _plain(v) for k, v in settings["prune"].items()}})
    if settings.get("quantize"):
        options = dict(settings["quantize"])
        mode = options.pop("mode")
        steps.append({"quantize": {mode: True, **{k: _plain(v) for k, v in options.items()}}})
    evaluation = {"name": "accuracy", "task": spec.task, "data": str(Path(spec.data).resolve())}
    evaluation |= {"reference": str(model.resolve()), "seq_len": spec.seq_len}
    if settings.get("ep", "cpu") != "cpu":
        evaluation["ep"] = settings["ep"]
    steps.append({"eval": evaluation})
    recipe = {"name": "search-best", "model": str(model.resolve()), "steps": steps}
    head = (
        f"# The best trial of `onnxopt search`, {trial.key}: {trial.metric} {trial.value:.4f}, "
        f"drop {trial.drop:.4f}.\n# Rebuild it: onnxopt run {RECIPE} -o DIR\n"
    )
    return head + yaml.safe_dump(recipe, sort_keys=False)


def write_best(out: Path, trial: Trial, folder: Path, model: Path, spec: EvalSpec) -> Path:
    """Copy the trial's model to OUT/best with its recipe, staged and renamed."""
    target = out / BEST
    with staged_dir(target) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        (tmp / RECIPE).write_text(recipe_text(trial, model, spec))
    return target
