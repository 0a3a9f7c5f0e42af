"""Model inputs: tokenized text samples, and synthetic inputs for timing.

Calibration readers are plain iterables of {input name: array} dicts; onnxruntime's reader
interface is adapted to only where onnxruntime needs it (onnxopt.quantize.calibrate).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from onnxopt.data.sources import Sample
from onnxopt.errors import OnnxoptError, first_line, shorten
from onnxopt.io.cache_layout import CacheLayout, cache_layout, empty_past

_ONNX_TO_NUMPY = {
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.BOOL: np.bool_,
}


TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# Text is cut to seq_len x CHARS_PER_TOKEN characters before tokenizing, so a 50 MB calibration
# sample no longer reaches the tokenizer whole (it grew to 5.7 GB and ran past 600 s). Nothing
# within the sequence length is lost: MiniLM's tokenizer averaged at most 9 characters a token over
# any text of calib/en.txt or STS-B dev; only text such as runs of 100-character words would be.
# Pairs gain most: truncating two 21.7 kB texts to 16 tokens took the tokenizer 29 s, uncut.
CHARS_PER_TOKEN = 32


def clip_text(text: str, seq_len: int) -> str:
    """The start of `text` that can reach its first `seq_len` tokens (see CHARS_PER_TOKEN)."""
    return text[: seq_len * CHARS_PER_TOKEN]


def _graph_inputs(model: onnx.ModelProto):
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


class InputTypes(dict):
    """Graph inputs (not initializers) -> the numpy dtype each takes; `cache` is the KV-cache layout
    of a decoder exported with past (its past inputs are then filled with empty tensors: a prefill),
    None otherwise."""

    cache: CacheLayout | None = None


def input_types(model: onnx.ModelProto) -> InputTypes:
    types = InputTypes(
        {i.name: _ONNX_TO_NUMPY.get(i.type.tensor_type.elem_type, np.int64) for i in _graph_inputs(model)}
    )
    types.cache = cache_layout(model)
    return types


def load_tokenizer(folder: Path | None):
    if folder is None:
        raise OnnxoptError(
            "this step needs the model's tokenizer, and a bare .onnx file has none",
            "point at the folder made by `onnxopt export`, which holds the tokenizer",
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:
        raise OnnxoptError(
            f"{folder} holds no usable tokenizer ({type(exc).__name__}: {first_line(exc, 100)})",
            "export the model with `onnxopt export`, which copies the tokenizer files",
        ) from exc


class TokenizedSamples:
    """Iterable of model input dicts, one sample each (batch 1, no padding), tokenized on the fly."""

    def __init__(self, samples: list[Sample], tokenizer, types: dict[str, type], seq_len: int):
        self.samples = samples
        self.tokenizer = tokenizer
        self.types = types
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for sample in self.samples:
            texts = (sample,) if isinstance(sample, str) else sample
            enc = self.tokenizer(
                *[clip_text(t, self.seq_len) for t in texts],
                truncation=True,
                max_length=self.seq_len,
                return_tensors="np",
            )
            yield complete_inputs(dict(enc), self.types)


def complete_inputs(encoded: dict[str, np.ndarray], types: dict[str, type]) -> dict[str, np.ndarray]:
    """Cast to the graph's dtypes and fill inputs a tokenizer does not produce."""
    ids = encoded["input_ids"]
    cache = getattr(types, "cache", None)
    feed = empty_past(cache, len(ids)) if cache is not None else {}
    for name, dtype in types.items():
        if name in feed:
            continue
        if name in encoded:
            feed[name] = encoded[name].astype(dtype)
        elif name == "attention_mask":
            feed[name] = np.ones_like(ids, dtype=dtype)
        elif name == "position_ids":
            feed[name] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(dtype)
        elif name == "token_type_ids":
            feed[name] = np.zeros_like(ids, dtype=dtype)
        else:
            raise _unfillable(name)
    return feed


# Inputs a tokenizer does not give, by what they say about the model: (name prefixes, what it is,
# what to do). T5 was told to export without past key values, which it already was.
_UNFILLABLE = (
    (("past_key_values.", "past."), "a KV-cache input of a layout onnxopt does not know",
     "export with optimum's -with-past task, whose cache inputs are past_key_values.*"),
    (("decoder_input_ids", "decoder_attention_mask", "encoder_outputs", "encoder_hidden_states"),
     "an encoder-decoder (seq2seq) model, which this command does not run yet",
     "use an encoder-only or decoder-only text model (BERT, RoBERTa, GPT-2, ...)"),
    (("pixel_values",), "an image model; onnxopt handles text models", "export a text model"),
    (("input_features", "input_values"), "an audio model; onnxopt handles text models",
     "export a text model"),
)  # fmt: skip


def _unfillable(name: str) -> OnnxoptError:
    message = f"the model takes an input {shorten(name)} that onnxopt cannot fill"
    for prefixes, kind, hint in _UNFILLABLE:
        if name.startswith(prefixes):
            return OnnxoptError(f"{message}: {kind}", hint)
    return OnnxoptError(
        message,
        "onnxopt fills input_ids, attention_mask, token_type_ids, position_ids and optimum's "
        "past_key_values.* cache; export the model with optimum's exporter (onnxopt export)",
    )


def synthetic_inputs(
    model: onnx.ModelProto, batch: int, seq: int, vocab_size: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs for timing, where values do not matter: random token ids with a full attention mask
    for text models; for other inputs, random values shaped by the graph (free dims: batch, then seq)."""
    rng = np.random.default_rng(seed)
    types = input_types(model)
    feed: dict[str, np.ndarray] = {}
    if "input_ids" in types:
        # Low ids are special tokens in most vocabularies; tiny test vocabularies have few ids at all.
        ids = rng.integers(min(100, vocab_size // 2), vocab_size, size=(batch, seq))
        tokens = InputTypes({k: v for k, v in types.items() if k in TOKEN_INPUTS})
        tokens.cache = types.cache  # a decoder with past: empty past tensors, a prefill
        feed = complete_inputs({"input_ids": ids}, tokens)
    for value in _graph_inputs(model):
        if value.name in feed:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.dim_value > 0 else (batch if i == 0 else seq) for i, d in enumerate(dims)]
        dtype = types[value.name]
        if np.issubdtype(dtype, np.floating):
            feed[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[value.name] = np.zeros(shape, dtype=dtype)
    return feed


def padded_batches(
    feeds: Iterable[dict[str, np.ndarray]], size: int
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Batch-1 feeds regrouped `size` at a time (similar lengths together, so little is spent on
    padding) and right-padded; with each batch, a boolean mask over its flattened (batch x seq)
    rows that is true on real tokens. One onnxruntime call per batch instead of per sample was
    what made pruning's statistics pass fast enough. Feeds without an attention_mask come one at a
    time: padding would change what their real tokens see."""
    items = list(feeds)
    if not items or "attention_mask" not in items[0]:
        for feed in items:
            yield feed, np.ones(next(iter(feed.values())).size, dtype=bool)
        return
    items.sort(key=lambda f: f["attention_mask"].shape[1])
    for start in range(0, len(items), size):
        group = items[start : start + size]
        width = max(f["attention_mask"].shape[1] for f in group)
        batch = {}
        for name in group[0]:
            rows = []
            for f in group:
                value = f[name]
                pad = width - value.shape[1]
                if name == "position_ids":
                    tail = value[:, -1:] + np.arange(1, pad + 1, dtype=value.dtype)
                else:
                    tail = np.zeros((1, pad), dtype=value.dtype)
                rows.append(np.concatenate([value, tail], axis=1))
            batch[name] = np.concatenate(rows, axis=0)
        yield batch, batch["attention_mask"].astype(bool).ravel()
