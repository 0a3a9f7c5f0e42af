"""Latency measurement: models timed interleaved in one run, so drift hits every model alike."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import modelio
from .errors import OnnxoptError
from .modelio import ModelRef
from .samples import synthetic_inputs
from .sessions import make_session

_MAX_RUNS = 1000


@dataclass
class Timing:
    model: str
    provider: str
    batch: int
    seq: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # samples per second at p50
    size_bytes: int
    speedup: float  # p50 of the first model / p50 of this one, same batch

    def as_dict(self) -> dict:
        return asdict(self)


def _vocab_size(ref: ModelRef) -> int:
    import json

    config = ref.folder / "config.json" if ref.folder else None
    if config is not None and config.is_file():
        try:
            return int(json.loads(config.read_text()).get("vocab_size", 1000))
        except (ValueError, TypeError):
            pass
    return 1000


def bench(
    refs: Sequence[ModelRef],
    batches: Sequence[int],
    seq: int,
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 2,
    provider: str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
    min_seconds: float = 0.0,
) -> list[Timing]:
    """Time every model at every batch size, interleaved. Each model gets at least `runs` timed runs,
    and more when needed to fill `min_seconds` (short batch-1 runs are noisy in small numbers)."""
    if not refs:
        raise OnnxoptError("no models to time", "give one or more model folders")
    if runs < 1 or warmup < 0:
        raise OnnxoptError(f"--runs must be at least 1, got {runs}", "20 runs give a stable median")
    if seq < 1 or any(b < 1 for b in batches):
        raise OnnxoptError("batch sizes and --seq must be positive", "e.g. --batch 1,32 --seq 128")
    planned = {b: runs for b in batches}
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress:
            on_progress(done, sum(planned.values()) * len(refs) + len(batches) * len(refs) * warmup)

    sessions = []
    for ref in refs:
        model = modelio.load(ref, load_weights=False)
        sessions.append((ref, make_session(ref.onnx_path, provider, threads), model))
    # Read once per model, not once per batch size: size_bytes parses the model file.
    sizes = [ref.size_bytes() for ref in refs]
    vocab_sizes = [_vocab_size(ref) for ref in refs]
    timings: list[Timing] = []
    for batch in batches:
        feeds = [
            synthetic_inputs(model, batch, seq, vocab)
            for (_ref, _s, model), vocab in zip(sessions, vocab_sizes, strict=True)
        ]
        samples: list[list[float]] = [[] for _ in sessions]
        fastest_ms = float("inf")
        for _ in range(max(warmup, 1 if min_seconds else 0)):
            for (_ref, session, _model), feed in zip(sessions, feeds, strict=True):
                start = time.perf_counter()
                session.run(None, feed)
                fastest_ms = min(fastest_ms, (time.perf_counter() - start) * 1000)
                tick()
        if min_seconds and fastest_ms > 0:
            planned[batch] = min(_MAX_RUNS, max(runs, math.ceil(min_seconds * 1000 / fastest_ms)))
        for r in range(planned[batch]):
            # Rotate the starting model each round so no model always runs right after another.
            order = [(r + i) % len(sessions) for i in range(len(sessions))]
            for i in order:
                start = time.perf_counter()
                sessions[i][1].run(None, feeds[i])
                samples[i].append((time.perf_counter() - start) * 1000)
                tick()
        base = float(np.median(samples[0]))
        for (ref, _s, _m), ms, size_bytes in zip(sessions, samples, sizes, strict=True):
            p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
            timings.append(
                Timing(
                    model=ref.name,
                    provider=provider,
                    batch=batch,
                    seq=seq,
                    runs=len(ms),
                    p50_ms=p50,
                    p90_ms=p90,
                    p99_ms=p99,
                    mean_ms=float(np.mean(ms)),
                    throughput=batch * 1000 / p50,
                    size_bytes=size_bytes,
                    speedup=base / p50,
                )
            )
    return timings
