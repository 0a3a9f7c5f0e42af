"""The search loop: the reference first, then each point the plan lets run, on the executor, each
result recorded as it arrives; latency on this machine, right after each evaluation (local) or
once the builds are done (Ray). Trials finished in an earlier run are read back, not redone."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from onnxopt.errors import first_line
from onnxopt.io.hashing import file_hash
from onnxopt.search.config import SearchConfig
from onnxopt.search.jobs import EvalSpec, Evaluated, Job, Step, built, evaluate_model, folder_size
from onnxopt.search.points import Point
from onnxopt.search.strategy import DONE, FAILED, Outcome, Plan
from onnxopt.search.timing import time_models
from onnxopt.search.trials import REFERENCE, Store, Trial, digest, node_hash

Progress = Callable[[str, int, int], None]


class Runner:
    def __init__(self, config: SearchConfig, model: Path, store: Store, spec: EvalSpec, input_hash: str):
        self.config, self.model, self.store, self.spec = config, model, store, spec
        self.input_hash = input_hash
        self.data_hash = file_hash([Path(spec.data)])
        self.trials: dict[str, Trial] = {}
        self.reference: Trial | None = None
        self.resumed = 0
        self.started = time.perf_counter()
        self.timing_cost = 0.0  # seconds one trial's timing takes, from the reference's

    # -- keys ------------------------------------------------------------------------------------
    def steps(self, point: Point) -> tuple[Step, ...]:
        steps, parent = [], self.input_hash
        for kind, options in (("prune", point.prune), ("quantize", point.quantize)):
            if options is not None:
                parent = node_hash(kind, options, parent)
                steps.append(Step(parent, kind, options))
        return tuple(steps)

    def eval_hash(self, model_hash: str, ep: str) -> str:
        spec = {**asdict(self.spec), "data": self.data_hash}
        return digest({"model": model_hash, "eval": spec, "ep": ep})

    def trial_hash(self, eval_hash: str) -> str:
        c = self.config
        return digest(
            {
                "eval": eval_hash,
                "batch": c.batch,
                "seq_len": c.seq_len,
                "runs": c.runs,
                "min_time": c.min_time,
            }
        )

    def job(self, point: Point) -> tuple[Job, Path]:
        """The job, with only the steps not built yet, and the folder of the nearest model built."""
        steps, src = self.steps(point), self.model
        eval_hash = self.eval_hash(steps[-1].hash, point.ep)
        while steps and built(self.store.model_folder(steps[0].hash)):
            src, steps = self.store.model_folder(steps[0].hash), steps[1:]
        return Job(point.key, steps, point.ep, eval_hash), src

    # -- the reference ---------------------------------------------------------------------------
    def measure_reference(self, progress: Progress) -> Trial:
        eval_hash = self.eval_hash(self.input_hash, "cpu")
        trial = self.store.finished(self.trial_hash(eval_hash))
        if trial is None:
            progress("reference: evaluating", 0, 0)
            metric, value, higher = evaluate_model(self.model, self.spec, "cpu")
            progress("reference: timing", 0, 0)
            timed = time_models(self.model, None, self.config)
            trial = Trial(REFERENCE, "reference", {"prune": None, "quantize": None, "ep": "cpu"})
            trial.hash, trial.metric, trial.value, trial.drop = self.trial_hash(eval_hash), metric, value, 0.0
            trial.within_budget, trial.p50_ms = True, timed.reference_p50_ms
            trial.speedup = {b: 1.0 for b in timed.reference_p50_ms}
            trial.size_bytes, trial.seconds = folder_size(self.model), {"timing": timed.seconds}
            trial.higher_is_better = higher
            self.store.add_trial(trial)
        self.reference = trial
        self.timing_cost = 2 * trial.seconds.get("timing", 0.0)  # a trial is timed beside the reference
        return trial

    @property
    def higher_is_better(self) -> bool:
        return self.reference is None or self.reference.higher_is_better

    def drop(self, value: float) -> float:
        diff = self.reference.value - value
        return diff if self.higher_is_better else -diff

    # -- the loop --------------------------------------------------------------------------------
    def run(self, plan: Plan, executor, progress: Progress) -> None:
        points = {p.key: p for p in plan.points}
        for point in plan.points:  # finished in an earlier run
            found = self.store.finished(self.trial_hash(self.eval_hash(self.steps(point)[-1].hash, point.ep)))
            if found is not None:
                self.trials[point.key] = found
                plan.finish(point.key, Outcome(DONE if found.status == DONE else FAILED, found.drop))
                self.resumed += 1
        untimed: list[tuple[Point, Evaluated]] = []
        stopped = False
        while True:
            moved = False
            if not stopped:
                start, skipped = plan.next(executor.free())
                for point, reason in skipped:
                    self.record(Trial(point.key, "skipped", point.settings, reason=reason), point)
                for point in start:
                    if self.out_of_time(executor, untimed):
                        stopped = True
                        break
                    self.start(point, plan, executor, untimed, progress)
                moved = bool(start or skipped)
            if executor.running():
                self.evaluated(executor.wait_one(), points, plan, untimed, executor.times_inline, progress)
            elif stopped or not moved:
                break
        for n, (point, result) in enumerate(untimed):
            progress(f"timing {point.key}", n, len(untimed))
            self.time_trial(point, result)

    def start(self, point: Point, plan: Plan, executor, untimed, progress: Progress) -> None:
        plan.started(point.key)
        job, src = self.job(point)
        saved = self.store.evaluations.get(job.eval_hash)
        if saved is not None and not job.steps:  # built and scored before: only its latency is missing
            result = Evaluated(
                point.key, job.eval_hash, saved["metric"], saved["value"], saved["higher_is_better"]
            )
            self.evaluated(result, {point.key: point}, plan, untimed, executor.times_inline, progress)
            return
        progress(f"trial {point.key}", len(plan.outcomes), len(plan.points))
        executor.submit(job, src)

    def evaluated(self, result: Evaluated, points, plan: Plan, untimed, now: bool, progress) -> None:
        point = points[result.key]
        if result.error is not None or result.value is None:
            trial = Trial(point.key, FAILED, point.settings, reason=result.error or "no metric")
            trial.seconds = result.seconds
            self.record(trial, point)
            plan.finish(point.key, Outcome(FAILED, reason=trial.reason))
            return
        if result.eval_hash not in self.store.evaluations:
            self.store.add_evaluation({"hash": result.eval_hash, "key": point.key, **_scored(result)})
        plan.finish(point.key, Outcome(DONE, self.drop(result.value)))
        if now:
            progress(f"timing {point.key}", 0, 0)
            self.time_trial(point, result)
        else:
            untimed.append((point, result))

    def time_trial(self, point: Point, result: Evaluated) -> None:
        leaf = self.store.model_folder(self.steps(point)[-1].hash)
        trial = Trial(point.key, DONE, point.settings, metric=result.metric, value=result.value)
        trial.higher_is_better = result.higher_is_better
        trial.drop = self.drop(result.value)
        trial.within_budget = trial.drop <= self.config.max_drop
        trial.model, trial.size_bytes = str(leaf.relative_to(self.store.out)), folder_size(leaf)
        trial.seconds = dict(result.seconds)
        try:
            timed = time_models(self.model, leaf, self.config, point.ep)
        except Exception as exc:  # a provider that cannot run the model: recorded, not fatal
            trial.status, trial.reason = FAILED, f"timing: {type(exc).__name__}: {first_line(exc)}"
        else:
            trial.p50_ms, trial.speedup, trial.reference_p50_ms = (
                timed.p50_ms,
                timed.speedup,
                timed.reference_p50_ms,
            )
            trial.seconds["timing"] = timed.seconds
            if not timed.p50_ms:
                trial.status, trial.reason = FAILED, f"timing: not timed on {point.ep} here"
        self.record(trial, point)

    def record(self, trial: Trial, point: Point) -> None:
        trial.hash = self.trial_hash(self.eval_hash(self.steps(point)[-1].hash, point.ep))
        self.trials[point.key] = trial
        self.store.add_trial(trial)

    def out_of_time(self, executor, untimed: list) -> bool:
        limit = self.config.time_limit
        if limit is None:
            return False
        elapsed = time.perf_counter() - self.started
        if executor.times_inline:
            return elapsed >= limit
        # On Ray, latency comes after the builds: leave time for every trial still to be timed.
        return elapsed + self.timing_cost * (len(untimed) + executor.running() + 1) >= limit


def _scored(result: Evaluated) -> dict:
    return {"metric": result.metric, "value": result.value, "higher_is_better": result.higher_is_better}
