"""The rotary-embedding tables of a Llama-family decoder, read from its config.json.

onnxruntime's GroupQueryAttention rotates queries and keys itself from two tables, cos and sin of
(position x frequency), shaped (max positions, rotary dim / 2). They are computed here with
transformers' own rope initialisers, so a scaled rope (linear, llama3, yarn) gives the tables the
PyTorch model uses; ropes that change with the sequence length (dynamic, longrope) cannot be one
fixed table and are refused with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.io.model_info import ModelInfo

FIXED_ROPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class RopeTables:
    cos: np.ndarray  # (max positions, rotary dim / 2), float32, attention scaling applied
    sin: np.ndarray


def rope_tables(model: Path | ModelInfo | None) -> RopeTables | str:
    """The tables, or the reason there are none for this model (`model`: its folder, or its ModelInfo)."""
    info = ModelInfo.read(model)
    raw = info.config
    if raw.get("model_type") not in ("llama", "qwen2", "mistral"):
        return f"no rotary tables for model type {raw.get('model_type')!r}"
    window = raw.get("sliding_window") if raw.get("use_sliding_window", True) else None
    if isinstance(window, int) and window < raw.get("max_position_embeddings", 0):
        # GroupQueryAttention's local window is not checked against PyTorch's here: not fused.
        return f"its attention is a sliding window of {window} tokens"
    scaling = raw.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else "?"
    if rope_type not in FIXED_ROPES:
        return f"its rope ({rope_type}) changes with the sequence length"
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = info.auto_config
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    positions = np.arange(config.max_position_embeddings, dtype=np.float32)
    angles = np.outer(positions, inv_freq.numpy().astype(np.float32))
    scale = np.float32(attention_scaling)
    return RopeTables(np.cos(angles) * scale, np.sin(angles) * scale)
