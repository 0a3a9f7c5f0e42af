"""What a model can take: the longest sequence its positions allow, and feeds it could never need.

Checked before any session is made, so the error names the limit instead of onnxruntime's
truncated C++ message about a Gather index or numpy's MemoryError.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxopt.errors import OnnxoptError, cut
from onnxopt.io.model_files import ModelRef
from onnxopt.io.model_info import ModelInfo

FEED_LIMIT = 4 << 30  # bytes of synthetic inputs per model: past this a fixed dim is not real


def max_sequence_length(model: Path | ModelInfo | None) -> tuple[int, str] | None:
    """The longest sequence the model's position embeddings allow, and the config key that says so
    (`model`: its folder, or its ModelInfo)."""
    return ModelInfo.read(model).max_positions


def check_sequence_length(model: ModelRef | ModelInfo, seq: int, option: str = "--seq-len") -> None:
    """Refuse a sequence length the model cannot take, naming the limit (onnxruntime's own error is
    a truncated C++ message about a Gather index)."""
    info = ModelInfo.read(model)
    limit = info.max_positions
    if limit is not None and seq > limit[0]:
        raise OnnxoptError(
            f"{option} {seq} exceeds {info.ref.name}'s {limit[1]} {limit[0]}",
            f"use {option} {limit[0]} or less",
        )


def check_feed_size(model: onnx.ModelProto, name: str, batch: int, seq: int) -> None:
    """Refuse inputs whose fixed dims would need more memory than any real model's (a dim of 1e12,
    say), before numpy tries to allocate them."""
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        count = 1
        for i, d in enumerate(dims):
            count *= d.dim_value if d.dim_value > 0 else (batch if i == 0 else seq)
        if count * 8 > FEED_LIMIT:
            shape = [d.dim_value or d.dim_param or "?" for d in dims]
            raise OnnxoptError(
                f"{name}: input {cut(value.name)} of shape {cut(str(shape))} would need "
                f"{count * 8 / 2**30:,.0f} GiB at batch {batch}, seq {seq}",
                "a fixed dim that large is not a real model's; export the model again",
            )


# Ops that pass ids through unchanged in value: GPT-2 reshapes input_ids before its embedding.
_SAME_IDS = {"Reshape", "Cast", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


def table_rows(model: onnx.ModelProto, ids: str) -> int | None:
    """Rows of the smallest initializer table a Gather indexes by the graph input `ids` (through
    reshapes and casts): the most a value of `ids` may be, less one. Quantized tables (int8 rows
    and their scales) are Gathers by the same ids, so they count alike."""
    tables = {t.name: t for t in model.graph.initializer}
    carries, found = {ids}, []
    for node in model.graph.node:  # graph order is topological: a reshape comes before its Gather
        if node.op_type in _SAME_IDS and node.input and node.input[0] in carries:
            carries.update(node.output)
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in carries:
            table = tables.get(node.input[0])
            if table is not None and len(table.dims) == 2:
                found.append(int(table.dims[0]))
    return min(found) if found else None


def embedding_rows(model: onnx.ModelProto) -> int | None:
    """Rows of the table that `input_ids` indexes (the word embedding), when it is an initializer."""
    return table_rows(model, "input_ids")


def graph_positions(model: onnx.ModelProto) -> tuple[int, str] | None:
    """The most positions the graph itself can take, and what holds it: a learned position table
    (GPT-2's wpe, indexed by position_ids) or GroupQueryAttention's rotary cos cache, one row a
    position. A config.json may say more; past these rows onnxruntime fails on a Gather index."""
    limits = []
    rows = table_rows(model, "position_ids")
    if rows is not None:
        limits.append((rows, f"position table of {rows} rows"))
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention" and len(node.input) > 7 and node.input[7] in tables:
            rows = int(tables[node.input[7]].dims[0])
            limits.append((rows, f"rotary cache of {rows} positions"))
    return min(limits) if limits else None


def check_vocab(model: onnx.ModelProto, ref: ModelRef, vocab_size: int) -> None:
    """Refuse a config.json whose vocab_size exceeds the word-embedding table: token ids past the
    table make onnxruntime fail with a Gather index error."""
    rows = embedding_rows(model)
    if rows is not None and vocab_size > rows:
        raise OnnxoptError(
            f"{ref.name}: config.json says vocab_size {vocab_size}, but the embedding table has {rows} rows",
            "fix vocab_size in config.json, or export the model again",
        )
