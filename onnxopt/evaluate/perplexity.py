"""Perplexity of a causal LM on a text file: exp(mean next-token negative log-likelihood) over
windows of --seq-len tokens, at most --limit windows, each window a prefill of its own.

The text is streamed: read a line (at most PIECE characters of it) at a time, tokenized a piece at
a time, scored a window at a time, so memory stays bounded whatever the file. Read whole, a 15 MB
single-line file reached 2.9 GB with no end at 150 s, 5 MB of NUL bytes 1.7 GB, and 1 MB of text
took ten minutes with --limit ignored; now the first --limit windows are scored (progress per
window) and NUL bytes are refused by offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from onnxopt.data.samples import input_types
from onnxopt.data.textio import text_pieces
from onnxopt.data.token_ids import load_token_ids
from onnxopt.errors import OnnxoptError, cut
from onnxopt.evaluate.task_metrics import head_runner, run_head
from onnxopt.io import model_files
from onnxopt.io.files import regular_file
from onnxopt.runtime.generation import target_log_probs
from onnxopt.runtime.generation_limits import check_length, check_memory, generation_bytes

_HINT = "give a UTF-8 text file, one passage per line"


@dataclass
class Perplexity:
    value: float
    windows: int  # windows scored (at most --limit)
    tokens: int  # tokens predicted


def check_text(path: Path) -> None:
    """Refuse what is not text before any session is made: not a regular file, NUL bytes or
    invalid UTF-8 before the first text, or no text at all (reading stops at the first)."""
    regular_file(path, "perplexity text", _HINT)
    if next(text_pieces(path), None) is None:
        raise OnnxoptError(f"{cut(str(path))} holds no text", _HINT)


def check_model(model: Path, seq_len: int) -> None:
    """Windows of `seq_len` tokens within the model's positions (its graph's too) and its memory."""
    ref = model_files.resolve(model)
    proto = model_files.load(ref, load_weights=False)
    check_length(ref, proto, seq_len, "--seq-len")
    layout = input_types(proto).cache
    if layout is not None:
        needs = generation_bytes(ref, proto, layout, 1, seq_len, seq_len)
        check_memory(ref.name, needs, 1, seq_len, "--seq-len")


def token_pieces(tokenizer, path: Path) -> Iterator[np.ndarray]:
    """The file's token ids, a piece of text at a time; special tokens (a BOS) only before the first.
    A piece may hold more tokens than the model's length: the windows cut it, so no warning."""
    for number, piece in enumerate(text_pieces(path)):
        ids = tokenizer(piece, add_special_tokens=number == 0, verbose=False)["input_ids"]
        yield np.asarray(ids, np.int64)


def windows(pieces: Iterable[np.ndarray], seq_len: int) -> Iterator[np.ndarray]:
    """Windows of seq_len + 1 tokens, each overlapping the next by one token (so every token but
    the first is predicted once), the last one shorter: what slicing all the ids at once gives."""
    held = np.zeros(0, np.int64)
    for ids in pieces:
        held = np.concatenate([held, ids])
        while len(held) > seq_len:
            yield held[: seq_len + 1]
            held = held[seq_len:]
    if len(held) >= 2:
        yield held


def perplexity(
    model: Path,
    path: Path,
    seq_len: int = 128,
    limit: int | None = None,
    settings=None,
    on_window: Callable[[int], None] | None = None,
) -> Perplexity:
    """Perplexity over the first `limit` windows of the text (all of them with None)."""
    runner = head_runner(model, "logits", None, settings, load_token_ids)
    total, count, done = 0.0, 0, 0
    for window in islice(windows(token_pieces(runner.tokenizer, path), seq_len), limit):
        inputs, targets = window[:-1][None, :], window[1:]
        logits = run_head(runner, {"input_ids": inputs}, ["logits"])[0][0]
        if logits.ndim != 2 or logits.shape[0] != len(targets):
            raise OnnxoptError(
                f"logits of shape {logits.shape} are not per-token scores",
                "use a causal LM export (--task text-generation) for --task perplexity",
            )
        total -= float(target_log_probs(logits, targets).sum())
        count, done = count + len(targets), done + 1
        if on_window:
            on_window(done)
    if count == 0:
        raise OnnxoptError("the text is too short to measure perplexity", "give at least a sentence")
    return Perplexity(float(np.exp(total / count)), done, count)
