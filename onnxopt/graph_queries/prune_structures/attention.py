"""Attention blocks found from each scores Softmax: separate Q, K and V projections as BERT has them,
else traced (onnxopt.graph_queries.prune_structures.traced_attention)."""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures.blocks import (
    AttentionBlock,
    Linear,
    descendants,
    down_projection,
    linear_ending_at,
    reshape_consts,
    scores_matmul,
)
from onnxopt.graph_queries.prune_structures.traced_attention import traced_block

_PASS_THROUGH = {"Mul", "Div", "Transpose", "Cast", "Identity", "Dropout"}


def _through(g: Graph, tensor: str, ops: set[str]) -> str:
    """Walk up from `tensor` while producers are in `ops` (following their first non-constant input)."""
    node = g.producer.get(tensor)
    while node is not None and node.op_type in ops:
        tensor = next(i for i in node.input if g.const(i) is None)
        node = g.producer.get(tensor)
    return tensor


def _head_projection(g: Graph, tensor: str) -> tuple[Linear, onnx.NodeProto] | None:
    """From a scores/context MatMul operand up to Reshape(heads) <- projection."""
    tensor = _through(g, tensor, _PASS_THROUGH)
    reshape = g.producer.get(tensor)
    if reshape is None or reshape.op_type != "Reshape":
        return None
    found = linear_ending_at(g, reshape.input[0])
    return (found[0], reshape) if found else None


def find_attention_blocks(g: Graph) -> tuple[list[AttentionBlock], list[str]]:
    """Every attention block, from its scores Softmax: first as BERT lays it out (separate Q/K/V,
    head counts in constant reshapes), else traced through a decoder's rotary embedding, KV cache,
    grouped-query repeat and packed QKV (traced_attention). A note for each one left whole."""
    blocks, notes = [], []
    for softmax in [n for n in g.model.graph.node if n.op_type == "Softmax"]:
        found = _separate_block(g, softmax, len(blocks))
        if isinstance(found, str):
            found = traced_block(g, softmax, len(blocks))
        if isinstance(found, str):
            notes.append(f"{softmax.name}: {found}; its heads are kept")
        else:
            blocks.append(found)
    return blocks, notes


def _separate_block(g: Graph, softmax: onnx.NodeProto, layer: int) -> AttentionBlock | str:
    """BERT, RoBERTa, DistilBERT, MiniLM: the block, or why it does not look like theirs."""
    scores = scores_matmul(g, softmax.input[0])
    context_mm = next(
        (c for c in descendants(g, softmax.output[0], {"Cast", "Dropout"}) if c.op_type == "MatMul"),
        None,
    )
    if scores is None or context_mm is None:
        return "scores or context MatMul not found"
    q = _head_projection(g, scores.input[0])
    k = _head_projection(g, scores.input[1])
    v = _head_projection(g, context_mm.input[1])
    if not (q and k and v):
        operands = (scores.input[0], scores.input[1], context_mm.input[1])
        if any(_shared_projection(g, t) for t in operands):
            return "Q/K/V weights are shared with another layer"
        return "Q/K/V are not separate projections (packed QKV)"
    merged = _merged_context(g, context_mm.output[0])
    reshape = g.producer.get(merged) if merged else None
    out_node = next((c for c in g.consumers.get(merged or "", []) if c.op_type in ("MatMul", "Gemm")), None)
    if reshape is None or reshape.op_type != "Reshape" or out_node is None:
        return "no merge Reshape and output projection after the context"
    width = g.inits[q[0].weight].dims[1]
    heads = _heads_from(g, q[1], width)
    per_projection = [reshape_consts(g, r, heads) for r in (q[1], k[1], v[1])] if heads else []
    if not per_projection or not all(per_projection):
        return "head count not found in a constant reshape shape"
    shapes = [c for consts in per_projection for c in consts]
    merge = reshape_consts(g, reshape, width)
    if not merge:
        return "merge Reshape width not constant"
    out = down_projection(g, out_node)
    return AttentionBlock(
        layer, q[0], k[0], v[0], out, heads, width // heads, out_node.input[0], shapes + merge
    )


def _shared_projection(g: Graph, tensor: str) -> bool:
    """Whether the projection behind a scores/context operand reads a weight shared between layers."""
    reshape = g.producer.get(_through(g, tensor, _PASS_THROUGH))
    node = g.producer.get(reshape.input[0]) if reshape is not None and reshape.input else None
    if node is not None and node.op_type == "Add":  # the bias Add: its MatMul is one input's producer
        node = next((p for i in node.input if (p := g.producer.get(i)) and p.op_type == "MatMul"), None)
    return node is not None and node.op_type in ("MatMul", "Gemm") and g.shared_weight(node.input[1])


def _heads_from(g: Graph, reshape: onnx.NodeProto, width: int) -> int | None:
    value = g.const(reshape.input[1])
    pieces = [value] if value is not None else [g.const(i) for i in g.producer[reshape.input[1]].input]
    numbers = [int(x) for p in pieces if p is not None for x in p.ravel().tolist() if x > 1]
    for heads in numbers:
        if width % heads == 0 and (width // heads) in numbers:
            return heads
    return None


def _merged_context(g: Graph, tensor: str) -> str | None:
    """Down from the context MatMul through single Transposes to the merge Reshape's output."""
    while len(users := g.consumers.get(tensor, [])) == 1:
        node = users[0]
        if node.op_type == "Reshape":
            return node.output[0]
        if node.op_type != "Transpose":
            return None
        tensor = node.output[0]
    return None
