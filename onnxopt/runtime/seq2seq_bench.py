"""`bench --generate` for encoder-decoders in parts: each model generating through its three
sessions (onnxopt.runtime.seq2seq), timed as decoders are (onnxopt.runtime.generation_bench):
the time to the first token is the encoder and the first decoder step, each further token one
step of the decoder with past; models take turns generation by generation, the first rotating."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.io.files import positive_int, read_config
from onnxopt.io.limits import check_sequence_length
from onnxopt.runtime.generation_bench import GenerationTiming
from onnxopt.runtime.seq2seq import Seq2Seq
from onnxopt.runtime.sessions import SessionSettings


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class _Model:
    folder: Path
    runner: Seq2Seq
    settings: SessionSettings
    rss_mb: float  # resident memory the sessions added (made, then one generation)
    warm_ms: float
    first: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)


def _load(folder: Path, settings: SessionSettings, prompt: np.ndarray, new_tokens: int) -> _Model:
    before = _rss_mb()
    runner = Seq2Seq.load(folder, settings)
    start = time.perf_counter()
    runner.timed(prompt, new_tokens)  # the warm-up generation
    return _Model(folder, runner, settings, _rss_mb() - before, (time.perf_counter() - start) * 1000)


def bench_seq2seq_generation(
    folders: Sequence[Path],
    batches: Sequence[int],
    prompt_len: int,
    new_tokens: int,
    settings_for: Callable[[model_files.ModelRef], SessionSettings],
    runs: int = 20,
    min_seconds: float = 2.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[GenerationTiming]:
    if new_tokens < 2:
        raise OnnxoptError("--new-tokens must be at least 2", "the first token is the prefill's; e.g. 64")
    for folder in folders:  # named limits, not onnxruntime's message about a Gather index
        check_sequence_length(model_files.part_ref(folder), prompt_len, "--prompt-len")
        check_sequence_length(model_files.part_ref(folder), new_tokens, "--new-tokens")
    vocab = min(positive_int(read_config(f), "vocab_size", f) or 1000 for f in folders)
    rng = np.random.default_rng(0)
    timings: list[GenerationTiming] = []
    for batch in batches:
        # Low ids are special tokens in most vocabularies; tiny test vocabularies have few ids at all.
        prompt = rng.integers(min(100, vocab // 2), vocab, size=(batch, prompt_len))
        loaded = [_load(f, settings_for(model_files.part_ref(f)), prompt, new_tokens) for f in folders]
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
        timings += _timings(loaded, batch, prompt_len, new_tokens, rounds)
    return timings


def _timings(loaded: list[_Model], batch: int, prompt_len: int, new_tokens: int, rounds: int) -> list:
    found, base = [], None
    for m in loaded:
        tpot = float(np.percentile(m.steps, 50))
        rate = batch * 1000 / tpot
        base = base or rate
        found.append(
            GenerationTiming(
                str(m.folder),
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
                model_files.folder_size(m.folder),
                m.settings.as_dict(),
            )  # fmt: skip
        )
    return found
