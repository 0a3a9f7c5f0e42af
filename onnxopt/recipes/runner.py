"""Running a recipe: each step through the library into OUT, skipped on a rerun when its inputs
(content hashes) and options are unchanged; a final comparison of every model it produced.

OUT/<step name>/ holds each model step's folder; OUT/recipe-state.json records each finished
step's key and results, written atomically after every step, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onnxopt import __version__ as onnxopt_version
from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.io.outputs import write_text_atomic
from onnxopt.recipes.checks import STATE_NAME, claim_out
from onnxopt.recipes.schema import MODEL_STEPS, PATH_OPTIONS, Recipe, Step

Progress = Callable[[str, int, int], None]


@dataclass
class StepOutcome:
    name: str
    kind: str
    skipped: bool
    seconds: float
    output: str | None
    summary: str


@dataclass
class ModelRow:
    step: str
    path: str
    size_bytes: int
    metric: str | None = None
    value: float | None = None
    drop: float | None = None
    p50_ms: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)


@dataclass
class RunResult:
    recipe: str
    out: Path
    steps: list[StepOutcome]
    models: list[ModelRow]


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_hash(folder: Path) -> str:
    """What a step's result depends on in its input folder: the graph and its weights (not the
    manifest, which eval and bench annotate)."""
    ref = model_files.resolve(folder)
    files = [ref.onnx_path] + [
        ref.onnx_path.parent / loc for loc in model_files._external_locations(ref.onnx_path)
    ]
    return _hash_files([f for f in files if f.is_file()])


def _source_hash(model: str | None) -> str:
    if model is None:
        return f"bundled:{onnxopt_version}"
    path = Path(model)
    if path.is_dir():
        return _hash_files([p for p in path.rglob("*") if p.is_file()])
    return f"hub:{model}"


def _step_key(step: Step, inputs: list[str]) -> str:
    options = dict(step.options)
    for key in PATH_OPTIONS:
        value = options.get(key)
        if isinstance(value, str) and Path(value).is_file():
            options[key] = {"path": value, "sha256": _hash_files([Path(value)])}
    blob = json.dumps(
        {"kind": step.kind, "options": options, "inputs": inputs, "onnxopt": onnxopt_version},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class _Reads:
    """What a step reads, worked out once: its model, eval's reference, bench's models."""

    source_name: str | None
    src: Path | None
    reference: Path | None
    bench_names: list[str]


def _load_state(out: Path) -> dict:
    path = out / STATE_NAME
    if not path.is_file():
        return {"steps": {}}
    try:
        state = json.loads(path.read_text())
        return state if isinstance(state.get("steps"), dict) else {"steps": {}}
    except (ValueError, AttributeError):
        return {"steps": {}}  # a damaged state only costs a rerun


def run(
    recipe: Recipe,
    out: Path,
    on_step: Callable[[Step], None] | None = None,
    on_progress: Progress | None = None,
    force: bool = False,
) -> RunResult:
    progress = on_progress or (lambda _s, _d, _t: None)
    claim_out(out, recipe.model, [s.name for s in recipe.steps if s.kind in MODEL_STEPS])
    state = {"steps": {}} if force else _load_state(out)
    outputs: dict[str, Path] = {}  # model step name -> its folder
    latest: str | None = None
    outcomes: list[StepOutcome] = []
    results: dict[str, Any] = {}
    hashes: dict[Path, str] = {}  # input folders are read once per run, not once per step using them

    def hashed(folder: Path) -> str:
        if folder not in hashes:
            hashes[folder] = model_hash(folder)
        return hashes[folder]

    for step in recipe.steps:
        if on_step:
            on_step(step)
        source_name = step.input or latest
        # What the step reads: its model (the previous one, a named one, or the recipe's ONNX
        # folder), eval's reference, bench's models.
        reads = _Reads(
            source_name,
            outputs[source_name] if source_name else (Path(recipe.model) if recipe.model else None),
            _eval_reference(step, outputs, source_name) if step.kind == "eval" else None,
            list(outputs) if step.options.get("models", "all") == "all" else step.options["models"],
        )
        if step.kind == "export":
            inputs = [_source_hash(recipe.model)]
        elif step.kind == "bench":
            inputs = [hashed(outputs[n]) for n in reads.bench_names]
        else:
            inputs = [hashed(reads.src), hashed(reads.reference) if reads.reference is not None else ""]
        key = _step_key(step, inputs)
        target = out / step.name
        saved = state["steps"].get(step.name, {})
        done = saved.get("key") == key and (step.kind not in MODEL_STEPS or (target / "model.onnx").is_file())
        start = time.perf_counter()
        if done:
            result, summary = saved.get("result"), saved.get("summary", "") + " (unchanged: skipped)"
        else:
            hashes.pop(target, None)
            result, summary = _execute(step, recipe, target, reads, outputs, progress)
            state["steps"][step.name] = {"key": key, "kind": step.kind, "result": result, "summary": summary}
            write_text_atomic(out / STATE_NAME, json.dumps(state, indent=2, default=str) + "\n")
        results[step.name] = result
        if step.kind in MODEL_STEPS:
            outputs[step.name] = target
            latest = step.name
        outcomes.append(
            StepOutcome(
                step.name,
                step.kind,
                done,
                time.perf_counter() - start,
                str(target) if step.kind in MODEL_STEPS else None,
                summary,
            )
        )
    return RunResult(recipe.name, out, outcomes, _compare(recipe, outputs, results))


def _eval_reference(step: Step, outputs: dict[str, Path], source_name: str | None) -> Path | None:
    """eval's reference: the named step or folder, else the recipe's first model (when it is not the
    model being evaluated)."""
    name = step.options.get("reference")
    if name is not None:
        if name in outputs:
            return outputs[name]
        if Path(name).exists():
            return Path(name)
        raise OnnxoptError(f"eval.reference: no model step or folder named {name!r}", "name an earlier step")
    first = next(iter(outputs), None)
    return outputs[first] if first is not None and first != source_name else None


# Recipe options the runner acts on itself rather than pass to the library, and those the library
# spells differently.
_RUNNER_OPTIONS = ("reference", "static", "dynamic")
_LIBRARY_NAMES = {"per_layer_floor": "floor"}


def _library_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """A step's options as the library function's keyword arguments. Options the recipe leaves out
    are not passed, so they take the library's defaults, which are the CLI's too."""
    kwargs = {_LIBRARY_NAMES.get(k, k): v for k, v in options.items() if k not in _RUNNER_OPTIONS}
    if "ops" in kwargs:
        kwargs["ops"] = ",".join(kwargs["ops"])
    if "exclude" in kwargs:
        kwargs["exclude"] = tuple(kwargs["exclude"])
    return kwargs


def _loads(result) -> str:
    """What --verify-loading found, checked by the workflow in its staged folder."""
    checked = result.verified
    if checked is None:
        return ""
    against = f" (min cosine {checked.min_cosine:.4f} vs input)" if checked.min_cosine is not None else ""
    return f"; loads as {checked.model_class}{against}"


def _execute(step, recipe, target, reads: _Reads, outputs, progress) -> tuple[Any, str]:
    o, src, reference = step.options, reads.src, reads.reference
    kwargs = _library_kwargs(o)
    if step.kind == "export":
        from onnxopt.export.workflow import export

        r = export(recipe.model, target, **kwargs, overwrite=True, on_stage=lambda msg: progress(msg, 0, 0))
        worst = max(r.max_abs_diff.values()) if r.max_abs_diff else 0.0
        text = f"{r.task}, opset {r.opset}, max abs diff vs PyTorch {worst:.1e}"
        return {"size_bytes": r.size_bytes}, text + _loads(r)
    if step.kind == "optimize":
        from onnxopt.optimize.workflow import optimize

        r = optimize(src, target, **kwargs, overwrite=True, on_progress=progress)
        return {}, f"parity max abs diff {r.parity.max_abs_diff:.1e}" + _loads(r)
    if step.kind == "quantize":
        from onnxopt.quantize.workflow import quantize

        mode = "static" if o.get("static") else "dynamic"
        r = quantize(src, target, mode, **kwargs, overwrite=True, on_progress=progress)
        return {}, f"{mode} int8, {r.size_after / 1e6:.1f} MB" + _loads(r)
    if step.kind == "prune":
        from onnxopt.prune.workflow import prune

        r = prune(src, target, **kwargs, overwrite=True, on_progress=progress)
        return {}, f"sparsity {o['sparsity']}, {r.seconds:.0f} s" + _loads(r)
    if step.kind == "eval":
        from onnxopt.evaluate.workflow import evaluate

        r = evaluate(src, reference, **kwargs)
        result = {
            "model": reads.source_name,
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
    from onnxopt.runtime.measure import bench, parse_providers

    names = reads.bench_names
    refs = [model_files.resolve(outputs[n]) for n in names]
    report = bench(
        refs,
        o.get("batch", [1, 32]),
        o.get("seq", 128),
        threads=o.get("threads"),
        runs=o.get("runs", 20),
        providers=parse_providers(o.get("ep", "cpu")),
        min_seconds=o.get("min_time", 2.0),
        on_progress=lambda d, t: progress("timing", d, t),
    )
    by_path = {str(outputs[n]): n for n in names}
    rows = [{**asdict(t), "step": by_path.get(t.model, t.model)} for t in report.timings]
    return {"timings": rows}, f"{len(refs)} models, batches {o.get('batch', [1, 32])}"


def _compare(recipe: Recipe, outputs: dict[str, Path], results: dict[str, Any]) -> list[ModelRow]:
    rows = []
    for name, folder in outputs.items():
        row = ModelRow(name, str(folder), model_files.resolve(folder).size_bytes())
        for step in recipe.steps:
            result = results.get(step.name) or {}
            if step.kind == "eval" and result.get("model", None) == name and result.get("value") is not None:
                row.metric, row.value, row.drop = result["metric"], result["value"], result.get("drop")
            elif step.kind == "eval" and result.get("reference_step") == name and row.value is None:
                row.metric, row.value = result["metric"], result.get("reference_value")
            if step.kind == "bench":
                timings = result.get("timings", [])
                first_provider = timings[0]["provider"] if timings else None  # speedups are against it
                for t in timings:
                    if t["step"] == name and t["provider"] == first_provider:
                        row.p50_ms[int(t["batch"])] = t["p50_ms"]
                        row.speedup[int(t["batch"])] = t["speedup"]
        rows.append(row)
    return rows
