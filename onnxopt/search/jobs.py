"""One trial's build and accuracy evaluation, the same in this process and in a Ray task: each
model-making step of its chain runs through its workflow (prune, quantize) as the command does,
then the last model is scored on the user's data. Latency is not measured here: see timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxopt.errors import first_line
from onnxopt.evaluate.config import EvalConfig
from onnxopt.io import model_files
from onnxopt.io.model_info import ModelInfo
from onnxopt.prune.config import PruneConfig
from onnxopt.quantize.config import QuantizeConfig

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Step:
    """One model-making step: its content hash (its folder's name), kind and options."""

    hash: str
    kind: str  # prune or quantize
    options: dict[str, Any]


@dataclass(frozen=True)
class EvalSpec:
    task: str
    data: str
    seq_len: int

    def config(self, ep: str) -> EvalConfig:
        return EvalConfig(task=self.task, data=self.data, seq_len=self.seq_len, ep=ep)


@dataclass(frozen=True)
class Job:
    key: str
    steps: tuple[Step, ...]  # root first; the last one's model is evaluated
    ep: str
    eval_hash: str


@dataclass
class Evaluated:
    key: str
    eval_hash: str
    metric: str | None = None
    value: float | None = None
    higher_is_better: bool = True
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def built(folder: Path) -> bool:
    return (folder / "model.onnx").is_file() or ModelInfo.read(folder).in_parts


def build_step(step: Step, src: Path, target: Path, progress: Progress) -> None:
    """Run the step's workflow from `src` into `target` (staged beside it and renamed)."""
    if step.kind == "prune":
        from onnxopt.prune.workflow import prune

        prune(src, target, PruneConfig(**step.options), overwrite=True, on_progress=progress)
        return
    from onnxopt.quantize.entry import quantize_model

    quantize_model(src, target, QuantizeConfig(**step.options), overwrite=True, on_progress=progress)


def evaluate_model(folder: Path, spec: EvalSpec, ep: str) -> tuple[str, float, bool]:
    """(metric name, value, higher is better) of the model on the data, nothing recorded."""
    from onnxopt.evaluate.workflow import evaluate

    result = evaluate(folder, spec.config(ep), record=False)
    return result.metric_name, result.metric, result.higher_is_better


def run_job(job: Job, src: Path, folder_of: Callable[[Step], Path], spec: EvalSpec, progress: Progress):
    """Build what the chain lacks from `src` (each step into `folder_of(step)`), then evaluate."""
    result = Evaluated(job.key, job.eval_hash)
    start = time.perf_counter()
    try:
        for step in job.steps:
            target = folder_of(step)
            if not built(target):
                progress(f"{job.key}: {step.kind}", 0, 0)
                build_step(step, src, target, progress)
            src = target
        result.seconds["build"] = time.perf_counter() - start
        progress(f"{job.key}: evaluating", 0, 0)
        result.metric, result.value, result.higher_is_better = evaluate_model(src, spec, job.ep)
    except Exception as exc:  # a trial that cannot be built or scored is recorded, not fatal
        result.error = f"{type(exc).__name__}: {first_line(exc)}"
    result.seconds["evaluate"] = time.perf_counter() - start - result.seconds.get("build", 0.0)
    return result


def folder_size(folder: Path) -> int:
    return model_files.folder_size(folder)
