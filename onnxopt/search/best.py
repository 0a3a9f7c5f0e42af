"""`OUT/best`: the fastest model within the budget, with the recipe that rebuilds it exactly
(`onnxopt run OUT/best/recipe.yaml -o DIR`): the input folder as the recipe's model, each step
with the options the trial used, and an eval step that scores it against the input again.

A rerun replaces OUT/best whole, so it proves first that onnxopt made all of it, as --overwrite
does (onnxopt.io.outputs.not_owned): a manifest onnxopt wrote, listing every entry; an entry it
does not list is someone else's, and the search is refused naming it."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from onnxopt.errors import OnnxoptError, cut
from onnxopt.io.manifest import MANIFEST_NAME, Manifest
from onnxopt.io.outputs import not_owned, staged_dir
from onnxopt.io.yaml_lines import echo
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
    """Copy the trial's model to OUT/best with its recipe, staged and renamed; its manifest, saved
    again in the staged folder, lists every file, recipe.yaml included (onnxopt.io.manifest)."""
    target = out / BEST
    check_replaceable(target)  # again: a user may have put a file there while the search ran
    with staged_dir(target) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        (tmp / RECIPE).write_text(recipe_text(trial, model, spec))
        manifest = Manifest.load(tmp)
        if manifest is not None:
            manifest.save(tmp)
    return target


def remove_best(out: Path) -> None:
    """Remove an OUT/best of an earlier run (no trial fits now), when onnxopt made all of it."""
    target = out / BEST
    check_replaceable(target)
    if target.is_dir():
        shutil.rmtree(target)


def check_replaceable(best: Path) -> None:
    """Refuse, in one line naming what onnxopt did not make, an OUT/best that is not onnxopt's
    whole (onnxopt.io.outputs.not_owned): a search replaces it."""
    if not best.exists() and not best.is_symlink():
        return
    hint = f"move it out of {echo(best)}, or choose another folder with -o"
    if best.is_symlink() or not best.is_dir():
        raise OnnxoptError(f"{echo(best)} is not a folder onnxopt made; a search replaces it", hint)
    why = not_owned(best)
    if why is None:
        return
    if not (best / MANIFEST_NAME).exists():
        why += f": it holds {cut(min(p.name for p in best.iterdir()), 60)}"
    raise OnnxoptError(f"{echo(best)} was not made by onnxopt ({why}); a search replaces that folder", hint)
