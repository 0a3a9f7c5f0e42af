"""The `search` workflow: the fastest model within an accuracy budget, over pruning x quantization
x provider, with every trial recorded, the Pareto fronts, and the best model with its recipe.

    search(fp32, out, max_drop=0.5, data="sts-dev.csv", task="sts", time="20m")

Checked before any work: the model, the data file, the space file (each bad key by its line),
OUT (new, empty or this model's search), Ray when asked for. Then the reference (the input) is
scored and timed, and the points run cheapest first (onnxopt.search.strategy), each recorded as
it finishes; a rerun redoes no finished trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt.errors import OnnxoptError, cut
from onnxopt.io import model_files
from onnxopt.io.files import regular_file
from onnxopt.io.hashing import model_hash
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.outputs import locked
from onnxopt.options import config_from
from onnxopt.search import executors, folder, ray_session
from onnxopt.search.best import remove_best, write_best
from onnxopt.search.config import SearchConfig
from onnxopt.search.jobs import EvalSpec
from onnxopt.search.loop import Runner
from onnxopt.search.points import points
from onnxopt.search.space import load_space
from onnxopt.search.strategy import DONE, Plan
from onnxopt.search.trials import Store, Trial, front

Progress = Callable[[str, int, int], None]
_TASKS = (
    ("text-generation", "perplexity"),
    ("text-classification", "classification"),
    ("question-answering", "qa"),
)


@dataclass
class SearchResult:
    out: Path
    model: str
    task: str
    max_drop: float
    executor: str
    reference: Trial
    trials: list[Trial]  # this search's points that were run or skipped, in the search's order
    best: Trial | None
    best_folder: Path | None
    batch: int  # the best is the fastest at this batch size (the largest timed)
    front_latency: list[str] = field(default_factory=list)  # keys, fastest (speedup) first
    front_size: list[str] = field(default_factory=list)  # keys, smallest first
    points: int = 0
    untried: int = 0  # neither run nor skipped: the budget or the time ran out
    resumed: int = 0  # found finished in OUT
    seconds: float = 0.0
    space: dict = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return self.reference.higher_is_better


def task_of(folder: Path) -> str:
    """The metric a model is searched by when --task is not given."""
    info = ModelInfo.read(model_files.resolve(folder))
    manifest = info.ref.manifest
    task = manifest.task if manifest is not None and manifest.task != "unknown" else info.task
    return next((metric for prefix, metric in _TASKS if task.startswith(prefix)), "sts")


def _check_inputs(model: Path, config: SearchConfig) -> bool:
    """The model and data before any work; whether the model is a causal LM."""
    ref = model_files.resolve(model)  # first: its own message for a folder in parts without a graph
    if ModelInfo.read(model).in_parts or ref.folder is None:
        raise OnnxoptError(
            f"{cut(str(model))}: search takes a model folder with one graph (from `onnxopt export`)",
            "encoder-decoders in parts are not searched yet",
        )
    regular_file(Path(config.data), "--data", "give the evaluation file, e.g. --data sts-dev.csv")
    return task_of(model) == "perplexity"


def search(
    model: Path, out: Path, config: SearchConfig | None = None, on_progress: Progress | None = None, **options
) -> SearchResult:
    config = config_from(SearchConfig, config, options)
    progress = on_progress or (lambda _stage, _done, _total: None)
    started = time.perf_counter()
    model, out = Path(model), Path(out)
    decoder = _check_inputs(model, config)
    space = load_space(Path(config.space) if config.space else None, decoder)
    found = points(space)
    if not found:
        raise OnnxoptError("the space holds no trial besides the input model", "add a sparsity or a mode")
    task = config.task or task_of(model)
    spec = EvalSpec(task, str(Path(config.data).resolve()), config.seq_len)
    if config.executor == "ray":
        ray_session.import_ray()  # refused here, before any work, where Ray is missing
        if config.address is not None:
            ray_session.check_reachable(config.address)  # and an address nothing answers at
    progress("hashing the input model", 0, 0)
    input_hash = model_hash(model)
    folder.check(out, model, input_hash)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with locked(out):
        marker = {
            "model": str(model.resolve()),
            "input_hash": input_hash,
            "task": task,
            "space": space.as_dict(),
        }
        folder.start(out, marker | {"max_drop": config.max_drop, "data": spec.data})
        store = Store(out)
        runner = Runner(config, model, store, spec, input_hash)
        executor = executors.make_executor(config, store.model_folder, spec, progress)
        try:
            runner.measure_reference(progress)
            plan = Plan(found, config.max_drop, config.budget)
            runner.run(plan, executor, progress)
        finally:
            executor.close()
        result = _result(runner, plan, out, model, task, config, space)
        result.best_folder = _keep_best(out, result.best, store, model, spec)
    result.seconds = time.perf_counter() - started
    return result


def _result(runner: Runner, plan: Plan, out, model, task, config: SearchConfig, space) -> SearchResult:
    trials = [runner.trials[p.key] for p in plan.points if p.key in runner.trials]
    batch = max(config.batch)
    done = [t for t in trials if t.status == DONE and batch in t.p50_ms]
    for t in done:  # against this run's budget: an earlier run may have had another
        t.within_budget = t.drop <= config.max_drop
    reference = runner.reference
    higher = reference.higher_is_better
    fits = [t for t in done if t.within_budget]
    best = max(fits, key=lambda t: (t.speedup.get(batch, 0.0), -(t.size_bytes or 0)), default=None)
    return SearchResult(
        out=out,
        model=str(model),
        task=task,
        max_drop=config.max_drop,
        executor=config.executor,
        reference=reference,
        trials=trials,
        best=best,
        best_folder=None,
        batch=batch,
        # Latency as 1 / speedup: each trial was timed in its own run beside the reference, and
        # only the ratio in one run is free of the machine's drift between runs.
        front_latency=front(
            [(t.key, 1 / t.speedup.get(batch, 1.0), t.value) for t in [reference, *done]], higher
        ),
        front_size=front([(t.key, float(t.size_bytes or 0), t.value) for t in [reference, *done]], higher),
        points=len(plan.points),
        untried=plan.untried,
        resumed=runner.resumed,
        space=space.as_dict(),
    )


def _keep_best(out: Path, best: Trial | None, store: Store, model: Path, spec: EvalSpec) -> Path | None:
    """OUT/best for the best trial; an OUT/best of an earlier run goes when no trial fits now."""
    if best is None:
        remove_best(out)
        return None
    return write_best(out, best, store.out / best.model, model, spec)
