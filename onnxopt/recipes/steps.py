"""A recipe step's options are its workflow's config, field for field: the schema a recipe is
checked against is derived from the config dataclasses (onnxopt.options), and each step runs by
building the config and calling the workflow, as the command does. An option exists in a recipe
exactly when it exists on the command line (with `recipe=False` the exceptions: `--plot`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from onnxopt.evaluate.config import EvalConfig
from onnxopt.export.config import ExportConfig
from onnxopt.io import model_files
from onnxopt.io.model_info import ModelInfo
from onnxopt.optimize.config import OptimizeConfig
from onnxopt.options import Field, chosen_flag, describe, fields_of, fits
from onnxopt.prune.config import PruneConfig
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.runtime.config import BenchConfig
from onnxopt.search.config import SearchConfig

CONFIGS = {
    "export": ExportConfig,
    "optimize": OptimizeConfig,
    "quantize": QuantizeConfig,
    "prune": PruneConfig,
    "eval": EvalConfig,
    "bench": BenchConfig,
    "search": SearchConfig,
}
MODEL_STEPS = ("export", "optimize", "quantize", "prune")  # steps that make a model
REPORT_STEPS = ("eval", "bench")  # steps that measure models
Check = tuple[Callable[[Any], bool], str]
# Keys a recipe has that no command has: which models a bench step times.
_RUNNER_KEYS: dict[str, dict[str, Check]] = {
    "bench": {
        "models": (
            lambda v: v == "all" or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
            "'all' or a list of step names",
        )
    }
}


def _recipe_fields(kind: str) -> list[Field]:
    return [f for f in fields_of(CONFIGS[kind]) if f.spec.recipe]


def schema(kind: str) -> dict[str, Check]:
    """Every key a step of `kind` takes, with its check and what it must be."""
    keys: dict[str, Check] = {}
    for f in _recipe_fields(kind):
        if f.spec.as_flags:  # `static: true` / `dynamic: true`, as --static / --dynamic
            keys.update(
                {choice: (lambda v: isinstance(v, bool), "true or false") for choice in f.spec.choices}
            )
        else:
            keys[f.name] = (lambda v, f=f: fits(f, v), describe(f, recipe=True))
    return {**keys, **_RUNNER_KEYS.get(kind, {})}


def required(kind: str) -> list[str]:
    return [f.name for f in _recipe_fields(kind) if f.required]


def recipe_words(text: str) -> str:
    """A config's message in a recipe's words: `--max-drop` is `max_drop` there."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), text)


def config_for(kind: str, values: dict[str, Any]):
    """The step's config from its (checked) recipe values."""
    kwargs = {}
    for f in _recipe_fields(kind):
        if f.spec.as_flags:
            kwargs[f.name] = chosen_flag(f, values, "{}: true".format, verb="set")
        elif f.name in values:
            kwargs[f.name] = tuple(values[f.name]) if f.is_list else values[f.name]
    return CONFIGS[kind](**kwargs)


def loads(result) -> str:
    """What --verify-loading found, checked by the workflow in its staged folder."""
    checked = getattr(result, "verified", None)
    if checked is None:
        return ""
    against = f" (min cosine {checked.min_cosine:.4f} vs input)" if checked.min_cosine is not None else ""
    return f"; loads as {checked.model_class}{against}"


def make_model(
    kind: str, config, model: str | None, src: Path | None, target: Path, progress
) -> tuple[dict, str]:
    """Run a model step (export, optimize, quantize, prune) into `target`; (result, summary)."""
    if kind == "export":
        from onnxopt.export.workflow import export

        r = export(model, target, config, overwrite=True, on_progress=progress)
        worst = max(r.max_abs_diff.values()) if r.max_abs_diff else 0.0
        text = f"{r.task}, opset {r.opset}, max abs diff vs PyTorch {worst:.1e}"
        return {"size_bytes": r.size_bytes}, text + loads(r)
    if kind == "optimize":
        from onnxopt.optimize.workflow import optimize

        r = optimize(src, target, config, overwrite=True, on_progress=progress)
        return {}, f"parity max abs diff {r.parity.max_abs_diff:.1e}" + loads(r)
    if kind == "quantize":
        from onnxopt.quantize.entry import quantize_model

        r = quantize_model(src, target, config, overwrite=True, on_progress=progress)
        return {}, f"{config.mode} int8, {r.size_after / 1e6:.1f} MB" + loads(r)
    from onnxopt.prune.workflow import prune

    r = prune(src, target, config, overwrite=True, on_progress=progress)
    return {}, f"sparsity {config.sparsity}, {r.seconds:.0f} s" + loads(r)


def evaluate_step(
    config: EvalConfig, src: Path, reference: Path | None, source_name, outputs
) -> tuple[dict, str]:
    from onnxopt.evaluate.workflow import evaluate

    r = evaluate(src, config.replace(reference=str(reference) if reference else None))
    result = {
        "model": source_name,
        "metric": r.metric_name,
        "value": r.metric,
        "drop": r.drop,
        "reference": r.reference,
        "reference_step": next((n for n, f in outputs.items() if f == reference), None),
        "reference_value": r.reference_metric,
    }
    if r.fidelity is not None:
        result.update(metric="min cosine", value=r.fidelity.min_cosine)
    text = f"{result['metric']} {result['value']:.4f}" if result["value"] is not None else "done"
    return result, text + (f", drop {r.drop:.2f}" if r.drop is not None else "")


def bench_step(config: BenchConfig, names: list[str], outputs: dict[str, Path], progress) -> tuple[dict, str]:
    from onnxopt.runtime.bench import run_bench

    folders = [outputs[n] for n in names]
    report = run_bench(folders, config, on_progress=progress)
    by_path = {str(f): n for n, f in zip(names, folders, strict=True)}
    by_path |= {
        model_files.resolve(f).name: n
        for n, f in zip(names, folders, strict=True)
        if not ModelInfo.read(f).in_parts
    }
    rows = [{**asdict(t), "step": by_path.get(t.model, t.model)} for t in report.results]
    return {"timings": rows}, f"{len(folders)} models, batches {list(config.batch)}"


def search_step(config: SearchConfig, src: Path, target: Path, progress) -> tuple[dict, str]:
    """A search of the step's input model into OUT/<step name> (resumed there on a rerun)."""
    from onnxopt.search.workflow import search

    r = search(src, target, config, on_progress=progress)
    best = r.best
    result = {
        "best": best.key if best else None,
        "best_model": str(r.best_folder) if r.best_folder else None,
        "metric": r.reference.metric,
        "value": best.value if best else None,
        "drop": best.drop if best else None,
        "speedup": best.speedup if best else {},
        "front": r.front_latency,
        "trials": sum(t.status == "done" for t in r.trials),
    }
    if best is None:
        return result, f"{result['trials']} trials, none within the budget"
    text = f"{result['trials']} trials; best {best.key}: {r.reference.metric} {best.value:.2f}"
    return result, text + f" (drop {best.drop:.2f}), {best.speedup.get(r.batch, 0):.2f}x at batch {r.batch}"
