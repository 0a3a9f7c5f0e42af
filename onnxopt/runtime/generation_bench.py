"""`bench --generate`: decoders timed as they serve, through their KV cache, interleaved in one run.

For each model: the time to the first token (the prefill of a `--prompt-len` prompt), the time of
each further token (p50, p90), decode tokens per second (batch / p50 per token), and the peak
resident memory of a process that serves it (runtime/peak_memory). Models
take turns generation by generation, the first one rotating, so drift hits them alike; decode
speedups are against the first model. Decode reads every weight once per token, so it is
memory-bound: what int8 and int4 save shows here more than in a prefill.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxopt.data.samples import input_types
from onnxopt.errors import OnnxoptError
from onnxopt.io.limits import check_vocab, embedding_rows
from onnxopt.io.model_files import ModelRef
from onnxopt.io.model_info import ModelInfo
from onnxopt.runtime.genai_bench import GenaiDecoder, genai_folder, genai_module, genai_settings
from onnxopt.runtime.generation import Decoder
from onnxopt.runtime.generation_limits import check_generation, disagreements
from onnxopt.runtime.measure import vocab_size
from onnxopt.runtime.peak_memory import peak_rss_mb
from onnxopt.runtime.sessions import SessionSettings, make_session


@dataclass
class GenerationTiming:
    model: str
    provider: str
    batch: int
    prompt_len: int
    new_tokens: int
    generations: int  # timed generations (each gives new_tokens - 1 decode steps)
    ttft_ms: float  # p50 of the prefill and first token
    tpot_p50_ms: float  # time per output token after the first
    tpot_p90_ms: float
    tokens_per_s: float  # decode throughput at p50: batch * 1000 / tpot_p50
    speedup: float  # decode tokens/s against the first model
    rss_mb: float  # peak resident memory of a process that loads the model and generates once
    size_bytes: int
    settings: dict = field(default_factory=dict)
    # "shared": past and present in one buffer, appended in place (runtime.generation.SharedCache);
    # "copied": each step's presents are new arrays fed back as the next past.
    cache: str = "copied"
    runtime: str = "onnxopt"  # what ran the generation loop: onnxopt's own, or "genai" (runtime.genai_bench)


@dataclass
class TimedModel:
    """One model in an interleaved generation run: its runner (anything with `timed(prompt,
    new_tokens)` and `shares_cache`: a Decoder, a Seq2Seq) and what was measured."""

    name: str
    runner: object
    settings: SessionSettings
    rss_mb: float
    size_bytes: int
    warm_ms: float  # the warm-up generation, which sizes the number of timed rounds
    first: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)


@dataclass
class Checked:
    """A model whose generation passed the checks: its cache layout, ids type, and vocabulary."""

    ref: ModelRef
    types: object
    vocab: int


def checked(ref: ModelRef, batch: int, prompt_len: int, new_tokens: int) -> Checked:
    """Everything that refuses a generation, from the model's files alone: no session is made and
    no prompt drawn until every model passed (a batch of 100000 once failed in onnxruntime's arena)."""
    info = ModelInfo.read(ref)  # config.json and the graph read once for every check below
    model = info.graph
    if not info.has_cache:
        raise OnnxoptError(
            f"{ref.name} has no KV cache to generate through",
            "export decoders with their cache (the default of `onnxopt export`), or bench without --generate",
        )
    types = input_types(model)
    vocab, rows = vocab_size(info), embedding_rows(model)
    check_vocab(model, ref, vocab)  # random ids past the embedding table fail on a Gather index
    check_generation(info, model, types.cache, batch, prompt_len, new_tokens)
    return Checked(ref, types, min(vocab, rows) if rows else vocab)


def _load(
    found: Checked, settings: SessionSettings, prompt: np.ndarray, new_tokens: int, runtime: str = "onnxopt"
) -> TimedModel:
    ref, layout = found.ref, found.types.cache
    if runtime == "genai":
        settings = genai_settings(settings)
        decoder = GenaiDecoder.load(ref, settings)
    else:
        hint = "; ".join(disagreements(ref, layout))
        session = make_session(ref.onnx_path, settings=settings)
        decoder = Decoder(session, layout, found.types.get("input_ids", np.int64), ref.name, hint)
    start = time.perf_counter()
    decoder.timed(prompt, new_tokens)  # the warm-up generation
    warm_ms = (time.perf_counter() - start) * 1000
    served = ref.folder if runtime == "genai" else ref.onnx_path
    rss = peak_rss_mb(served, settings, prompt, new_tokens, runtime)
    return TimedModel(ref.name, decoder, settings, rss, ref.size_bytes(), warm_ms)


def bench_generation(
    refs: Sequence[ModelRef],
    batches: Sequence[int],
    prompt_len: int,
    new_tokens: int,
    settings_for: Callable[[ModelRef], SessionSettings],
    runs: int = 20,
    min_seconds: float = 2.0,
    on_progress: Callable[[int, int], None] | None = None,
    runtime: str = "onnxopt",
) -> list[GenerationTiming]:
    check_new_tokens(new_tokens)
    found = [checked(ref, max(batches), prompt_len, new_tokens) for ref in refs]
    if runtime == "genai":  # before any session, as the checks above
        genai_module()
        for f in found:
            genai_folder(f.ref)
    timings: list[GenerationTiming] = []
    rng = np.random.default_rng(0)
    for batch in batches:
        vocab = min(f.vocab for f in found)
        prompt = random_prompt(rng, vocab, batch, prompt_len)
        loaded = [_load(f, settings_for(f.ref), prompt, new_tokens, runtime) for f in found]
        rounds = interleaved_rounds(loaded, prompt, new_tokens, runs, min_seconds, on_progress)
        timings += timing_rows(loaded, batch, prompt_len, new_tokens, rounds, runtime)
        del loaded
    return timings


def check_new_tokens(new_tokens: int) -> None:
    if new_tokens < 2:
        raise OnnxoptError("--new-tokens must be at least 2", "the first token is the prefill's; e.g. 64")


def random_prompt(rng, vocab: int, batch: int, prompt_len: int) -> np.ndarray:
    # Low ids are special tokens in most vocabularies; tiny test vocabularies have few ids at all.
    return rng.integers(min(100, vocab // 2), vocab, size=(batch, prompt_len))


def interleaved_rounds(
    loaded: list[TimedModel], prompt: np.ndarray, new_tokens: int, runs: int, min_seconds: float, on_progress
) -> int:
    """Time every model generation by generation, the first one rotating each round; the number
    of rounds, sized by the warm-up so the run lasts at least `min_seconds`."""
    per_generation = max(sum(m.warm_ms for m in loaded) / len(loaded), 1e-3)
    rounds = min(runs, max(2, math.ceil(min_seconds * 1000 / per_generation)))
    for r in range(rounds):
        for k in range(len(loaded)):
            m = loaded[(r + k) % len(loaded)]
            first, steps = m.runner.timed(prompt, new_tokens)
            m.first.append(first)
            m.steps += steps
        if on_progress:
            on_progress(r + 1, rounds)
    return rounds


def timing_rows(
    loaded: list[TimedModel],
    batch: int,
    prompt_len: int,
    new_tokens: int,
    rounds: int,
    runtime: str = "onnxopt",
) -> list:
    """One GenerationTiming per model; decode speedups against the first."""
    found, base = [], None
    for m in loaded:
        tpot = float(np.percentile(m.steps, 50))
        rate = batch * 1000 / tpot
        base = base or rate
        found.append(
            GenerationTiming(
                m.name,
                m.settings.provider,
                batch,
                prompt_len,
                new_tokens,
                rounds,
                float(np.percentile(m.first, 50)),
                tpot,
                float(np.percentile(m.steps, 90)),
                rate,
                rate / base,
                m.rss_mb,
                m.size_bytes,
                m.settings.as_dict(),
                "shared" if m.runner.shares_cache else "copied",
                runtime,
            )  # fmt: skip
        )
    return found
