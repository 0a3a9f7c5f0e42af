"""`bench --generate` for encoder-decoders in parts: each model generating through its three
sessions (onnxopt.runtime.seq2seq), timed as decoders are (onnxopt.runtime.generation_bench):
the time to the first token is the encoder and the first decoder step, each further token one
step of the decoder with past; models take turns generation by generation, the first rotating."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from onnxopt.io import model_files
from onnxopt.io.limits import check_sequence_length
from onnxopt.io.model_info import ModelInfo
from onnxopt.runtime.generation_bench import (
    GenerationTiming,
    TimedModel,
    check_new_tokens,
    interleaved_rounds,
    random_prompt,
    timing_rows,
)
from onnxopt.runtime.peak_memory import peak_rss_mb
from onnxopt.runtime.seq2seq import Seq2Seq
from onnxopt.runtime.sessions import SessionSettings


def _load(folder: Path, settings: SessionSettings, prompt: np.ndarray, new_tokens: int) -> TimedModel:
    runner = Seq2Seq.load(folder, settings)
    start = time.perf_counter()
    runner.timed(prompt, new_tokens)  # the warm-up generation
    warm_ms = (time.perf_counter() - start) * 1000
    rss = peak_rss_mb(folder, settings, prompt, new_tokens)
    return TimedModel(str(folder), runner, settings, rss, model_files.folder_size(folder), warm_ms)


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
    check_new_tokens(new_tokens)
    infos = [ModelInfo.read(folder) for folder in folders]  # each named by its folder
    for info in infos:  # named limits, not onnxruntime's message about a Gather index
        check_sequence_length(info, prompt_len, "--prompt-len")
        check_sequence_length(info, new_tokens, "--new-tokens")
    vocab = min(info.vocab_size or 1000 for info in infos)
    rng = np.random.default_rng(0)
    timings: list[GenerationTiming] = []
    for batch in batches:
        prompt = random_prompt(rng, vocab, batch, prompt_len)
        loaded = [_load(f, settings_for(model_files.part_ref(f)), prompt, new_tokens) for f in folders]
        rounds = interleaved_rounds(loaded, prompt, new_tokens, runs, min_seconds, on_progress)
        timings += timing_rows(loaded, batch, prompt_len, new_tokens, rounds)
    return timings
