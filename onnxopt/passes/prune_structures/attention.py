"""Attention blocks with separate Q, K and V projections, found from each scores Softmax."""

from __future__ import annotations

import onnx

from onnxopt.passes.graph_index import Graph
from onnxopt.passes.prune_structures.blocks import (
    AttentionBlock,
    Linear,
    down_projection,
    linear_ending_at,
    reshape_consts,
)

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
    blocks, notes = [], []
    for softmax in [n for n in g.model.graph.node if n.op_type == "Softmax"]:
        scores = _scores_matmul(g, softmax.input[0])
        context_mm = next(
            (c for c in _descendants(g, softmax.output[0], {"Cast", "Dropout"}) if c.op_type == "MatMul"),
            None,
        )
        if scores is None or context_mm is None:
            notes.append(f"{softmax.name}: scores or context MatMul not found")
            continue
        q = _head_projection(g, scores.input[0])
        k = _head_projection(g, scores.input[1])
        v = _head_projection(g, context_mm.input[1])
        if not (q and k and v):
            operands = (scores.input[0], scores.input[1], context_mm.input[1])
            if any(_shared_projection(g, t) for t in operands):
                notes.append(f"{softmax.name}: Q/K/V weights are shared with another layer")
            else:
                notes.append(f"{softmax.name}: Q/K/V are not separate projections (packed QKV)")
            continue
        merged = _merged_context(g, context_mm.output[0])
        reshape = g.producer.get(merged) if merged else None
        out_node = next(
            (c for c in g.consumers.get(merged or "", []) if c.op_type in ("MatMul", "Gemm")), None
        )
        if reshape is None or reshape.op_type != "Reshape" or out_node is None:
            notes.append(f"{softmax.name}: no merge Reshape and output projection after the context")
            continue
        width = g.inits[q[0].weight].dims[1]
        heads = _heads_from(g, q[1], width)
        per_projection = [reshape_consts(g, r, heads) for r in (q[1], k[1], v[1])] if heads else []
        if not per_projection or not all(per_projection):
            notes.append(f"{softmax.name}: head count not found in a constant reshape shape")
            continue
        head_dim = width // heads
        shapes = [c for consts in per_projection for c in consts]
        merge = reshape_consts(g, reshape, width)
        if not merge:
            notes.append(f"{softmax.name}: merge Reshape width not constant")
            continue
        shapes += merge
        out = down_projection(g, out_node)
        blocks.append(
            AttentionBlock(len(blocks), q[0], k[0], v[0], out, heads, head_dim, out_node.input[0], shapes)
        )
    return blocks, [f"{note}; its heads are kept" for note in notes]


def _shared_projection(g: Graph, tensor: str) -> bool:
    """Whether the projection behind a scores/context operand reads a weight shared between layers."""
    reshape = g.producer.get(_through(g, tensor, _PASS_THROUGH))
    node = g.producer.get(reshape.input[0]) if reshape is not None and reshape.input else None
    if node is not None and node.op_type == "Add":  # the bias Add: its MatMul is one input's producer
        node = next((p for i in node.input if (p := g.producer.get(i)) and p.op_type == "MatMul"), None)
    return node is not None and node.op_type in ("MatMul", "Gemm") and g.shared_weight(node.input[1])


def _scores_matmul(g: Graph, tensor: str) -> onnx.NodeProto | None:
    """Up from the Softmax input through scaling and masking to the Q.K MatMul."""
    node = g.producer.get(tensor)
    for _ in range(8):
        if node is None or node.op_type == "MatMul":
            return node
        if node.op_type not in {"Add", "Mul", "Div", "Sub", "Cast", "Where"}:
            return None
        operands = [g.producer[i] for i in node.input if g.const(i) is None and i in g.producer]
        node = next((p for p in operands if p.op_type == "MatMul"), operands[0] if operands else None)
    return None


def _heads_from(g: Graph, reshape: onnx.NodeProto, width: int) -> int | None:
    value = g.const(reshape.input[1])
    pieces = [value] if value is not None else [g.const(i) for i in g.producer[reshape.input[1]].input]
    numbers = [int(x) for p in pieces if p is not None for x in p.ravel().tolist() if x > 1]
    for heads in numbers:
        if width % heads == 0 and (width // heads) in numbers:
            return heads
    return None


def _descendants(g: Graph, tensor: str, through: set[str]) -> list[onnx.NodeProto]:
    out, frontier = [], [tensor]
    while frontier:
        for c in g.consumers.get(frontier.pop(), []):
            out.append(c)
            if c.op_type in through:
                frontier.append(c.output[0])
    return out


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
