"""Metrics of decoders through their KV cache, as they serve.

- Perplexity as generation reads a text: chunks of --seq-len tokens, the cache carried from chunk
  to chunk (restarted past the model's position limit), so every token sees the whole text
  before it, as a generating model does; windows without the cache (how models without one are
  scored) see only their window.
- Greedy agreement: each prompt continued greedily by the model and by its reference; the share
  of positions where the two chose the same token (x100). A quantized model can keep its
  perplexity and still change what it writes: the optimum + quantize_dynamic peer agreed with
  fp32 on only 22-23% of tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxopt.data.samples import clip_text, input_types, load_tokenizer
from onnxopt.errors import OnnxoptError
from onnxopt.io import limits, model_files
from onnxopt.io.model_info import ModelInfo
from onnxopt.runtime.generation import Decoder
from onnxopt.runtime.generation_limits import check_memory, disagreements, generation_bytes, positions
from onnxopt.runtime.sessions import make_session

CONTEXT_CAP = 2048  # tokens of cache carried at most: memory stays bounded on long texts


def cache_context(folder: Path | None) -> int:
    """How many tokens a decoder's cache may hold: its position limit, capped at CONTEXT_CAP."""
    limit = limits.max_sequence_length(folder)
    return min(limit[0], CONTEXT_CAP) if limit else CONTEXT_CAP


def _with_cache(model: Path):
    """The model's info, graph (no weights) and input types; refused without a KV cache."""
    info = ModelInfo.read(model_files.resolve(model))
    if not info.has_cache:
        raise OnnxoptError(
            f"{info.ref.name} has no KV cache to generate through",
            "export it with its cache (the default of `onnxopt export` for decoders)",
        )
    return info, info.graph, input_types(info.graph)


def decoder_of(model: Path, settings=None) -> tuple[Decoder, object, int]:
    """The model's Decoder, its tokenizer, and how many tokens its cache may hold: its positions
    (config.json's or, where smaller or alone, the graph's), capped at CONTEXT_CAP."""
    info, proto, types = _with_cache(model)
    ref = info.ref
    session = make_session(ref.onnx_path, "cpu", settings=settings)
    hint = "; ".join(disagreements(info, types.cache))
    return (
        Decoder(session, types.cache, types.get("input_ids", np.int64), ref.name, hint),
        load_tokenizer(ref.folder),
        min(positions(info, proto).limit, CONTEXT_CAP),
    )


def check_greedy(model: Path, new_tokens: int, seq_len: int) -> int:
    """The prompt length greedy generation of `new_tokens` leaves within the model's positions,
    after refusing what cannot run: no room for a prompt, or more memory than there is. Reads the
    model's files only, so `eval --task generation` answers before any session or prompt."""
    info, proto, types = _with_cache(model)
    ref = info.ref
    context = min(positions(info, proto).limit, CONTEXT_CAP)
    if new_tokens >= context:
        raise OnnxoptError(
            f"--new-tokens {new_tokens} leaves no room for a prompt in {ref.name}'s {context} positions",
            f"use --new-tokens {context // 2} or less",
        )
    prompt = min(seq_len, context - new_tokens)  # prompt and continuation within the positions
    needs = generation_bytes(info, proto, types.cache, 1, prompt, prompt + new_tokens)
    check_memory(ref.name, needs, 1, prompt + new_tokens, "--seq-len plus --new-tokens")
    return prompt


def cache_perplexity(model: Path, texts: list[str], seq_len: int = 128, settings=None) -> float:
    """exp(mean next-token negative log-likelihood) over the whole text, read through the cache."""
    decoder, tokenizer, context = decoder_of(model, settings)
    ids = np.array(tokenizer("\n\n".join(texts))["input_ids"], dtype=np.int64)
    if len(ids) < 2:
        raise OnnxoptError("the text is too short to measure perplexity", "give at least a sentence")
    log_likelihoods = decoder.token_log_likelihoods(ids, seq_len, context)
    return float(np.exp(-log_likelihoods.mean()))


def greedy_tokens(model: Path, prompts: list[str], new_tokens: int, seq_len: int, settings=None) -> list:
    seq_len = check_greedy(model, new_tokens, seq_len)
    decoder, tokenizer, _context = decoder_of(model, settings)
    found = []
    for prompt in prompts:
        ids = tokenizer(clip_text(prompt, seq_len), truncation=True, max_length=seq_len, return_tensors="np")
        found.append(decoder.greedy(ids["input_ids"], new_tokens)[0])
    return found


def greedy_agreement(generated: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The share (x100) of positions where both chose the same token, over every prompt."""
    equal = sum(int((a == b).sum()) for a, b in zip(generated, reference, strict=True))
    total = sum(len(b) for b in reference)
    return 100.0 * equal / max(total, 1)
