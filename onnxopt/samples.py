"""Model inputs: tokenized text samples, and synthetic inputs for timing.

Calibration readers are plain iterables of {input name: array} dicts; onnxruntime's reader
interface is adapted to only where onnxruntime needs it (onnxopt.calibrate).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from .datasources import Sample
from .errors import OnnxoptError

_ONNX_TO_NUMPY = {
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.BOOL: np.bool_,
}


def input_types(model: onnx.ModelProto) -> dict[str, type]:
    """Graph inputs (not initializers) and the numpy dtype each takes."""
    initializers = {t.name for t in model.graph.initializer}
    return {
        i.name: _ONNX_TO_NUMPY.get(i.type.tensor_type.elem_type, np.int64)
        for i in model.graph.input
        if i.name not in initializers
    }


def load_tokenizer(folder: Path | None):
    if folder is None:
        raise OnnxoptError("this step needs the model's tokenizer, and a bare .onnx file has none",
                           "point at the folder made by `onnxopt export`, which holds the tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise OnnxoptError(f"{folder} holds no usable tokenizer ({type(exc).__name__})",
                           "export the model with `onnxopt export`, which copies the tokenizer files") from exc


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
            pair = (sample,) if isinstance(sample, str) else sample
            enc = self.tokenizer(*pair, truncation=True, max_length=self.seq_len, return_tensors="np")
            yield complete_inputs(dict(enc), self.types)


def complete_inputs(encoded: dict[str, np.ndarray], types: dict[str, type]) -> dict[str, np.ndarray]:
    """Cast to the graph's dtypes and fill inputs a tokenizer does not produce."""
    ids = encoded["input_ids"]
    feed = {}
    for name, dtype in types.items():
        if name in encoded:
            feed[name] = encoded[name].astype(dtype)
        elif name == "attention_mask":
            feed[name] = np.ones_like(ids, dtype=dtype)
        elif name == "position_ids":
            feed[name] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(dtype)
        elif name == "token_type_ids":
            feed[name] = np.zeros_like(ids, dtype=dtype)
        else:
            raise OnnxoptError(f"the model takes an input {name!r} that onnxopt cannot fill",
                               "export without past key values (the default task), or for a text model")
    return feed


def synthetic_inputs(types: dict[str, type], batch: int, seq: int, vocab_size: int = 1000,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids and a full attention mask: for timing, where values do not matter."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(100, max(101, vocab_size), size=(batch, seq))
    return complete_inputs({"input_ids": ids}, types)


def batched(inputs: Iterable[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return list(inputs)
