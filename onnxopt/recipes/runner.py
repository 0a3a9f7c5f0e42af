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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxopt import __version__ as onnxopt_version
from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.io.hashing import file_hash, model_hash
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.outputs import write_text_atomic
from onnxopt.recipes import steps
from onnxopt.recipes.checks import STATE_NAME, claim_out
from onnxopt.recipes.schema import PATH_OPTIONS, Recipe, Step
from onnxopt.recipes.steps import MODEL_STEPS

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


def _source_hash(model: str | None) -> str:
    if model is None:
        return f"bundled:{onnxopt_version}"
    path = Path(model)
    if path.is_dir():
        return file_hash([p for p in path.rglob("*") if p.is_file()])
    return f"hub:{model}"


def _step_key(step: Step, inputs: list[str]) -> str:
    options = dict(step.options)
    for key in PATH_OPTIONS:
        value = options.get(key)
        if isinstance(value, str) and Path(value).is_file():
            options[key] = {"path": value, "sha256": file_hash([Path(value)])}
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


@dataclass
class _Run:
    """One recipe run's state: where each model went, the hashes read so far, the saved state."""

    recipe: Recipe
    out: Path
    state: dict
    outputs: dict[str, Path] = field(default_factory=dict)  # model step name -> its folder
    latest: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    hashes: dict[Path, str] = field(default_factory=dict)  # input folders hashed once per run

    def hashed(self, folder: Path) -> str:
        if folder not in self.hashes:
            self.hashes[folder] = model_hash(folder)
        return self.hashes[folder]

    def reads(self, step: Step) -> _Reads:
        """What the step reads: its model (the previous one, a named one, or the recipe's ONNX
        folder), eval's reference, bench's models."""
        source_name = step.input or self.latest
        model = self.recipe.model
        return _Reads(
            source_name,
            self.outputs[source_name] if source_name else (Path(model) if model else None),
            _eval_reference(step, self.outputs, source_name) if step.kind == "eval" else None,
            list(self.outputs) if step.options.get("models", "all") == "all" else step.options["models"],
        )

    def key(self, step: Step, reads: _Reads) -> str:
        if step.kind == "export":
            inputs = [_source_hash(self.recipe.model)]
        elif step.kind == "bench":
            inputs = [self.hashed(self.outputs[n]) for n in reads.bench_names]
        else:
            reference = self.hashed(reads.reference) if reads.reference is not None else ""
            inputs = [self.hashed(reads.src), reference]
        return _step_key(step, inputs)


def run(
    recipe: Recipe,
    out: Path,
    on_step: Callable[[Step], None] | None = None,
    on_progress: Progress | None = None,
    force: bool = False,
) -> RunResult:
    progress = on_progress or (lambda _s, _d, _t: None)
    claim_out(out, recipe.model, [s.name for s in recipe.steps if s.kind in MODEL_STEPS])
    current = _Run(recipe, out, {"steps": {}} if force else _load_state(out))
    outcomes = []
    for step in recipe.steps:
        if on_step:
            on_step(step)
        outcomes.append(_run_step(current, step, progress))
    return RunResult(recipe.name, out, outcomes, _compare(recipe, current.outputs, current.results))


def _run_step(current: _Run, step: Step, progress) -> StepOutcome:
    """One step, skipped when its key (options and input hashes) is the one its state saved."""
    reads = current.reads(step)
    key = current.key(step, reads)
    target = current.out / step.name
    saved = current.state["steps"].get(step.name, {})
    made = (
        step.kind not in MODEL_STEPS or (target / "model.onnx").is_file() or ModelInfo.read(target).in_parts
    )
    done = saved.get("key") == key and made
    start = time.perf_counter()
    if done:
        result, summary = saved.get("result"), saved.get("summary", "") + " (unchanged: skipped)"
    else:
        current.hashes.pop(target, None)
        result, summary = _execute(step, current.recipe, target, reads, current.outputs, progress)
        current.state["steps"][step.name] = {
            "key": key,
            "kind": step.kind,
            "result": result,
            "summary": summary,
        }
        text = json.dumps(current.state, indent=2, default=str) + "\n"
        write_text_atomic(current.out / STATE_NAME, text)
    current.results[step.name] = result
    if step.kind in MODEL_STEPS:
        current.outputs[step.name] = target
        current.latest = step.name
    folder = str(target) if step.kind in MODEL_STEPS else None
    return StepOutcome(step.name, step.kind, done, time.perf_counter() - start, folder, summary)


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


def _execute(step, recipe, target, reads: _Reads, outputs, progress) -> tuple[Any, str]:
    """Run one step: its config from the recipe's values, then the workflow, as the command does."""
    values = dict(step.options)
    if step.kind == "eval":
        values.pop("reference", None)  # resolved by the runner: an earlier step's folder, or a path
        if reads.reference is not None:  # the config's rules (generation needs one) see it too
            values["reference"] = str(reads.reference)
    config = steps.config_for(step.kind, values)
    if step.kind in MODEL_STEPS:
        return steps.make_model(step.kind, config, recipe.model, reads.src, target, progress)
    if step.kind == "eval":
        return steps.evaluate_step(config, reads.src, reads.reference, reads.source_name, outputs)
    if step.kind == "search":
        return steps.search_step(config, reads.src, target, progress)
    return steps.bench_step(config, reads.bench_names, outputs, progress)


def _compare(recipe: Recipe, outputs: dict[str, Path], results: dict[str, Any]) -> list[ModelRow]:
    rows = []
    for name, folder in outputs.items():
        row = ModelRow(name, str(folder), model_files.folder_size(folder))
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
