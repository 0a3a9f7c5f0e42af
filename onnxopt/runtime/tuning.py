"""`bench --tune`: a brief search of session settings per model and provider, by measurement.

A handful of candidates per provider (threads, graph optimization level, execution mode; for
OpenVINO its performance and precision hints), timed interleaved at one batch size. A candidate
whose outputs drift from the CPU provider's default is never chosen (see selection.drifts).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from onnxopt.io.model_files import ModelRef
from onnxopt.runtime.measure import bench
from onnxopt.runtime.selection import drifts
from onnxopt.runtime.sessions import SessionSettings, cpu_count


def candidates(provider: str, threads: int | None = None) -> list[SessionSettings]:
    """The settings tried for one provider; the first is the default, and the reference."""
    cores = threads or cpu_count()
    base = SessionSettings(provider=provider, intra_threads=threads)
    found = [base]
    if provider == "cpu":
        if cores > 1:
            found.append(SessionSettings(provider="cpu", intra_threads=max(1, cores // 2)))
        found.append(SessionSettings(provider="cpu", intra_threads=threads, opt_level="extended"))
        found.append(
            SessionSettings(provider="cpu", intra_threads=threads, execution_mode="parallel", inter_threads=2)
        )
    elif provider == "openvino":
        for config in (
            {"PERFORMANCE_HINT": "THROUGHPUT"},
            {"INFERENCE_PRECISION_HINT": "f32"},
            {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"},
        ):
            options = {"load_config": json.dumps({"CPU": config}, sort_keys=True)}
            found.append(
                SessionSettings(provider="openvino", intra_threads=threads, provider_options=options)
            )
    elif provider == "cuda":
        found.append(SessionSettings(provider="cuda", intra_threads=threads, opt_level="extended"))
    return found


@dataclass
class TuneResult:
    model: str
    best: dict[str, SessionSettings]  # provider -> fastest eligible settings
    timings: list  # every candidate's Timing
    unavailable: list


def tune(
    ref: ModelRef,
    providers: Sequence[str],
    batch: int,
    seq: int,
    threads: int | None = None,
    runs: int = 10,
    min_seconds: float = 0.5,
    on_progress: Callable[[int, int], None] | None = None,
) -> TuneResult:
    report = bench(
        [ref],
        [batch],
        seq,
        runs=runs,
        warmup=1,
        providers=providers,
        on_progress=on_progress,
        min_seconds=min_seconds,
        variants_for=lambda _ref, provider: candidates(provider, threads),
    )
    best: dict[str, SessionSettings] = {}
    for provider in dict.fromkeys(t.provider for t in report.timings):
        rows = [t for t in report.timings if t.provider == provider and not drifts(t)]
        if rows:
            best[provider] = SessionSettings.from_dict(min(rows, key=lambda t: t.p50_ms).settings)
    return TuneResult(ref.name, best, report.timings, report.unavailable)
