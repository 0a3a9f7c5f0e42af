"""Latency on this machine, one trial at a time: the trial and the reference timed interleaved in
one `bench` run (onnxopt.runtime.bench), so a speedup is always against the reference measured
in the same run, and machine drift hits both alike."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt.runtime.bench import run_bench
from onnxopt.runtime.config import BenchConfig
from onnxopt.search.config import SearchConfig


@dataclass
class Timed:
    p50_ms: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    reference_p50_ms: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0


def time_models(reference: Path, model: Path | None, config: SearchConfig, ep: str = "cpu") -> Timed:
    """p50 per batch of `model` on `ep` and its speedup over `reference` on the CPU provider, timed
    together; `model` None times the reference alone."""
    start = time.perf_counter()
    models = [reference] if model is None else [reference, model]
    bench = BenchConfig(
        batch=config.batch,
        seq_len=config.seq_len,
        ep="cpu" if ep == "cpu" else f"cpu,{ep}",
        runs=config.runs,
        min_time=config.min_time,
        warmup=1,
    )
    report = run_bench(models, bench)
    timed = Timed()
    for t in report.results:
        if t.model == str(reference) and t.provider == "cpu":
            timed.reference_p50_ms[t.batch] = t.p50_ms
        if t.model == str(models[-1]) and t.provider == ep:
            timed.p50_ms[t.batch] = t.p50_ms
            timed.speedup[t.batch] = t.speedup
    timed.seconds = time.perf_counter() - start
    return timed
