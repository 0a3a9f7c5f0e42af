"""Latency measurement: every (model, provider) pair timed interleaved in one run, so drift hits
them all alike."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from onnxopt.data.samples import synthetic_inputs
from onnxopt.errors import OnnxoptError, first_line
from onnxopt.io import limits
from onnxopt.io.model_files import ModelRef
from onnxopt.io.model_info import ModelInfo
from onnxopt.runtime.providers import available, openvino_route
from onnxopt.runtime.sessions import SessionSettings, make_session, node_placement
from onnxopt.runtime.similarity import row_cosines

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
    speedup: float  # p50 of the first model on the first provider / p50 of this one, same batch
    first_run_ms: float = 0.0  # session creation plus the first inference, at the first batch size
    nodes_by_provider: dict[str, int] = field(default_factory=dict)
    fallback_ops: dict[str, int] = field(default_factory=dict)  # op types not on the chosen provider
    settings: dict = field(default_factory=dict)
    # Outputs against the same model on the CPU provider, same inputs (None when CPU was not run):
    # a provider may change precision (OpenVINO runs bf16 on CPUs with AMX unless told otherwise).
    max_abs_diff_vs_cpu: float | None = None
    min_cosine_vs_cpu: float | None = None
    route: str = ""  # OpenVINO: which route ran it, and why that one (runtime/providers.openvino_route)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Unavailable:
    provider: str
    reason: str


@dataclass
class BenchReport:
    timings: list[Timing]
    unavailable: list[Unavailable] = field(default_factory=list)


@dataclass
class _Candidate:
    ref: ModelRef
    settings: SessionSettings
    session: object = None
    first_run_ms: float = 0.0
    first_outputs: list | None = None
    nodes: dict = field(default_factory=dict)
    fallback: dict = field(default_factory=dict)
    max_abs_diff_vs_cpu: float | None = None
    min_cosine_vs_cpu: float | None = None
    route: str = ""


def vocab_size(model: ModelRef | ModelInfo) -> int:
    return ModelInfo.read(model).vocab_size or 1000


def _checked_run(c: _Candidate, feed: dict, batch: int) -> list:
    """One run, with onnxruntime's failure turned into a user-facing error. Every batch size gets
    its first run through here; the timed runs repeat the same inputs."""
    try:
        return c.session.run(None, feed)
    except Exception as exc:
        first = first_line(exc, 200)
        raise OnnxoptError(
            f"onnxruntime cannot run {c.ref.name} on {c.settings.provider} at batch {batch}: {first}",
            "check the model's input shapes with `onnxopt inspect`; fixed batch or sequence sizes "
            "need matching --batch/--seq",
        ) from exc


def _compare(outputs: list, reference: list) -> tuple[float, float]:
    diff, cosine = 0.0, 1.0
    for got, want in zip(outputs, reference, strict=True):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape or not np.issubdtype(want.dtype, np.floating):
            continue
        diff = max(diff, float(np.max(np.abs(got - want))) if got.size else 0.0)
        g, w = got.reshape(len(got), -1), want.reshape(len(want), -1)
        cos = row_cosines(g, w)
        cosine = min(cosine, float(cos.min()) if cos.size else 1.0)
    return diff, cosine


def _compare_with_cpu(candidates: list[_Candidate]) -> None:
    """Each pair's first outputs against the same model's first CPU candidate, once per run; the
    outputs are dropped afterwards."""
    for c in candidates:
        cpu = next((o for o in candidates if o.ref is c.ref and o.settings.provider == "cpu"), None)
        if cpu is not None:
            c.max_abs_diff_vs_cpu, c.min_cosine_vs_cpu = _compare(c.first_outputs, cpu.first_outputs)
    for c in candidates:
        c.first_outputs = None


def bench(
    refs: Sequence[ModelRef],
    batches: Sequence[int],
    seq: int,
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 2,
    providers: Sequence[str] = ("cpu",),
    on_progress: Callable[[int, int], None] | None = None,
    min_seconds: float = 0.0,
    variants_for: Callable[[ModelRef, str], Sequence[SessionSettings]] | None = None,
) -> BenchReport:
    """Time every model on every available provider at every batch size, interleaved. Each pair gets
    at least `runs` timed runs, and more when needed to fill `min_seconds` (short batch-1 runs are
    noisy in small numbers). `variants_for` gives the session settings to time for each pair
    (default: one, the provider with `threads`; `tune` gives several); unavailable providers are
    reported with the reason, not timed."""
    if not refs:
        raise OnnxoptError("no models to time", "give one or more model folders")
    if runs < 1 or warmup < 0:
        raise OnnxoptError(f"--runs must be at least 1, got {runs}", "20 runs give a stable median")
    if seq < 1 or not batches or any(b < 1 for b in batches):
        raise OnnxoptError("batch sizes and --seq-len must be positive", "e.g. --batch 1,32 --seq-len 128")
    usable, unavailable = _usable(providers)

    def default_variants(_ref: ModelRef, provider: str) -> list[SessionSettings]:
        return [SessionSettings(provider=provider, intra_threads=threads)]

    infos = {id(ref): ModelInfo.read(ref) for ref in refs}
    models = {id(ref): infos[id(ref)].graph for ref in refs}
    for ref in refs:  # the model's limits before any session is made, each named
        limits.check_sequence_length(infos[id(ref)], seq, "--seq-len")
        limits.check_vocab(models[id(ref)], ref, vocab_size(infos[id(ref)]))
        for batch in batches:
            limits.check_feed_size(models[id(ref)], ref.name, batch, seq)
    variants = variants_for or default_variants
    candidates = [_Candidate(ref, s) for ref in refs for provider in usable for s in variants(ref, provider)]
    candidates = _loaded(candidates, unavailable)
    clock = _Clock(candidates, batches, runs, warmup, on_progress)
    # Read once per model, not once per batch size: size_bytes parses the model file.
    sizes = {ref.name: ref.size_bytes() for ref in refs}
    vocab_sizes = {ref.name: vocab_size(infos[id(ref)]) for ref in refs}
    timings: list[Timing] = []
    for b_index, batch in enumerate(batches):
        feeds = {
            id(ref): synthetic_inputs(models[id(ref)], batch, seq, vocab_sizes[ref.name]) for ref in refs
        }
        if b_index == 0:
            _first_runs(candidates, feeds, batch)
        samples = clock.time(feeds, batch, min_seconds)
        timings += _timings(candidates, samples, batch, seq, sizes)
    return BenchReport(timings, unavailable)


def _usable(providers: Sequence[str]) -> tuple[list[str], list[Unavailable]]:
    usable, unavailable = [], []
    for provider in providers:
        ok, why = available(provider)
        (usable.append(provider) if ok else unavailable.append(Unavailable(provider, why)))
    if not usable:
        raise OnnxoptError(
            "none of the requested execution providers can run here",
            "; ".join(f"{u.provider}: {u.reason}" for u in unavailable),
        )
    return usable, unavailable


def _loaded(candidates: list[_Candidate], unavailable: list[Unavailable]) -> list[_Candidate]:
    """The pairs whose model the provider can load. A model another provider cannot read (the
    CPU-provider int8 layout on OpenVINO) is reported with the reason, and the others are timed;
    on the CPU provider a model that does not load is an error."""
    kept = []
    for c in candidates:
        # First-run time is what a server pays at start: session creation (timed here, once) and
        # one inference (added by _first_runs).
        start = time.perf_counter()
        try:
            c.session = make_session(c.ref.onnx_path, settings=c.settings, record_placement=True)
        except OnnxoptError as exc:
            if c.settings.provider == "cpu":
                raise
            unavailable.append(Unavailable(c.settings.provider, f"for {c.ref.name}: {exc.message}"))
            continue
        c.first_run_ms = (time.perf_counter() - start) * 1000
        kept.append(c)
    if not kept:
        raise OnnxoptError("no model could be loaded on the requested providers", unavailable[-1].reason)
    return kept


def _first_runs(candidates: list[_Candidate], feeds: dict, batch: int) -> None:
    for c in candidates:
        start = time.perf_counter()
        c.first_outputs = _checked_run(c, feeds[id(c.ref)], batch)
        c.first_run_ms += (time.perf_counter() - start) * 1000
        c.nodes, c.fallback = node_placement(c.session)
        if c.settings.provider == "openvino":
            c.route = ": ".join(openvino_route(c.settings.provider_options.get("device", "CPU")))
    _compare_with_cpu(candidates)


class _Clock:
    """The timed runs of one bench, and its progress count."""

    def __init__(self, candidates, batches, runs: int, warmup: int, on_progress):
        self.candidates, self.runs, self.warmup, self.on_progress = candidates, runs, warmup, on_progress
        # Providers' thread pools disturb each other when runs alternate between them (onnxruntime's
        # threads spin after a run, OpenVINO's TBB workers too): measured here, the CPU provider's p50
        # rose ~30% when alternated with OpenVINO run by run. So with several providers, each turn
        # starts with one untimed run that lets the pool settle.
        self.settle = len({c.settings.provider for c in candidates}) > 1
        self.planned = {b: runs for b in batches}
        self.done = 0

    def tick(self) -> None:
        self.done += 1
        if self.on_progress:
            per_turn = 2 if self.settle else 1
            n = len(self.candidates)
            self.on_progress(
                self.done, sum(self.planned.values()) * n * per_turn + len(self.planned) * n * self.warmup
            )

    def time(self, feeds: dict, batch: int, min_seconds: float) -> list[list[float]]:
        candidates = self.candidates
        samples: list[list[float]] = [[] for _ in candidates]
        fastest_ms = float("inf")
        for _ in range(max(self.warmup, 1 if min_seconds else 0)):
            for c in candidates:
                start = time.perf_counter()
                _checked_run(c, feeds[id(c.ref)], batch)
                fastest_ms = min(fastest_ms, (time.perf_counter() - start) * 1000)
                self.tick()
        if min_seconds and fastest_ms > 0:
            self.planned[batch] = min(_MAX_RUNS, max(self.runs, math.ceil(min_seconds * 1000 / fastest_ms)))
        for r in range(self.planned[batch]):
            # Rotate the starting pair each round so no pair always runs right after another.
            for k in range(len(candidates)):
                c = candidates[(r + k) % len(candidates)]
                if self.settle:
                    c.session.run(None, feeds[id(c.ref)])
                    self.tick()
                start = time.perf_counter()
                c.session.run(None, feeds[id(c.ref)])
                samples[(r + k) % len(candidates)].append((time.perf_counter() - start) * 1000)
                self.tick()
        return samples


def _timings(candidates, samples, batch: int, seq: int, sizes: dict) -> list[Timing]:
    base = float(np.median(samples[0]))
    timings = []
    for c, ms in zip(candidates, samples, strict=True):
        p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
        timings.append(
            Timing(
                model=c.ref.name,
                provider=c.settings.provider,
                batch=batch,
                seq=seq,
                runs=len(ms),
                p50_ms=p50,
                p90_ms=p90,
                p99_ms=p99,
                mean_ms=float(np.mean(ms)),
                throughput=batch * 1000 / p50,
                size_bytes=sizes[c.ref.name],
                speedup=base / p50,
                first_run_ms=c.first_run_ms,
                nodes_by_provider=dict(c.nodes),
                fallback_ops=dict(c.fallback),
                settings=c.settings.as_dict(),
                max_abs_diff_vs_cpu=c.max_abs_diff_vs_cpu,
                min_cosine_vs_cpu=c.min_cosine_vs_cpu,
                route=c.route,
            )
        )
    return timings
