"""The structures pruning finds (projections, FFN and attention blocks, width-carrying shape
constants), and the graph walks the finders share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxopt.graph_queries.graph_index import Graph, attributes


@dataclass
class Linear:
    """A projection: y = x @ weight + bias (weight rows are input channels)."""

    node: str
    weight: str
    bias: str | None
    bias_node: str | None = None  # the Add carrying the bias, for MatMul + Add


@dataclass
class ShapeConst:
    """One element of a constant shape vector that must change when width changes: a Reshape or
    Expand target, Split sizes, Slice bounds. Every one is proportional to its block's unit count
    (heads * head_dim, a section bound of a packed projection), so folding scales it by kept / units."""

    reshape: str  # the node reading the vector
    index: int  # position in the shape vector
    value: int
    input: int = 1  # which input of the node holds the vector (Slice ends: 2)


@dataclass
class FfnBlock:
    layer: int
    up: Linear
    down: Linear
    width: int
    hidden_input: str  # the down projection's input tensor (activations, F channels)
    shapes: list[ShapeConst] = field(default_factory=list)
    gate: Linear | None = None  # gated FFN (SwiGLU, GeGLU): a second projection, sliced as `up` is
    # Where each neuron's columns sit in up's output: [0, F] when gate and up are one packed
    # projection whose output is split in halves (Phi-3's gate_up_proj, ModernBERT's Wi).
    up_offsets: list[int] = field(default_factory=lambda: [0])


@dataclass
class AttentionBlock:
    layer: int
    q: Linear
    k: Linear
    v: Linear
    out: Linear
    heads: int
    head_dim: int
    context: str  # the output projection's input tensor (heads * head_dim channels)
    shapes: list[ShapeConst] = field(default_factory=list)
    # Grouped-query attention: `heads // kv_heads` query heads read each K/V head, and a unit is such
    # a group (0: one K/V head per query head, as in BERT).
    kv_heads: int = 0
    offsets: tuple[int, int, int] = (0, 0, 0)  # q, k, v first column in their projection (packed QKV)
    cache: list[str] = field(default_factory=list)  # past inputs and present outputs: dim 1 is kv_heads

    @property
    def groups(self) -> int:
        return self.kv_heads or self.heads

    @property
    def group_size(self) -> int:
        return self.heads // self.groups


def head_channels(heads, head_dim: int) -> np.ndarray:
    """The hidden channels of the given heads (head h owns channels h*d .. h*d + d - 1)."""
    return np.concatenate([np.arange(h * head_dim, (h + 1) * head_dim) for h in heads]).astype(np.int64)


def query_channels(block: AttentionBlock, units) -> np.ndarray:
    """The context channels (rows of the output projection) of the kept units: under grouped-query
    attention, query head h reads K/V head h // group_size (repeat_kv), so unit g is query heads
    g * group_size .. (g + 1) * group_size - 1."""
    n = block.group_size
    return head_channels([u * n + r for u in units for r in range(n)], block.head_dim)


def block_linears(block) -> list[Linear]:
    """A block's projections, each once (packed QKV is one projection read three times)."""
    if isinstance(block, FfnBlock):
        found = [block.up, block.gate, block.down]
    else:
        found = [block.q, block.k, block.v, block.out]
    unique: dict[str, Linear] = {}
    for linear in found:
        if linear is not None:
            unique.setdefault(linear.node, linear)
    return list(unique.values())


def linear_ending_at(g: Graph, tensor: str) -> tuple[Linear, int] | None:
    """The projection producing `tensor` (MatMul [+ bias Add] or Gemm), and its output width."""
    node = g.producer.get(tensor)
    if node is None:
        return None
    if node.op_type == "Add":
        for bias, other in (node.input, reversed(node.input)):
            inner = g.producer.get(other)
            if inner is None or inner.op_type != "MatMul" or g.weight_2d(inner.input[1]) is None:
                continue
            width = g.inits[inner.input[1]].dims[1]
            if g.is_vector(bias, width) and len(g.consumers.get(other, [])) == 1:
                return Linear(inner.name, inner.input[1], bias, node.name), width
        return None
    if node.op_type == "MatMul" and g.weight_2d(node.input[1]) is not None:
        return Linear(node.name, node.input[1], None), g.inits[node.input[1]].dims[1]
    if node.op_type == "Gemm" and g.weight_2d(node.input[1]) is not None:
        attrs = attributes(node)
        if attrs.get("transA", 0) or attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0:
            return None
        width = g.inits[node.input[1]].dims[1]
        bias = node.input[2] if len(node.input) > 2 and g.is_vector(node.input[2], width) else None
        if len(node.input) > 2 and node.input[2] and bias is None:
            return None  # a broadcast bias of another shape: leave it alone
        return Linear(node.name, node.input[1], bias), width
    return None


def reshape_consts(g: Graph, reshape: onnx.NodeProto, wanted: int) -> list[ShapeConst] | None:
    """Positions in a Reshape's target shape equal to `wanted`, when that shape is built of constants
    (a constant vector, or a Concat of constant and computed pieces)."""
    shape = reshape.input[1]
    value = g.const(shape)
    if value is not None:
        return [ShapeConst(reshape.name, i, wanted) for i, v in enumerate(value.tolist()) if v == wanted]
    concat = g.producer.get(shape)
    if concat is None or concat.op_type != "Concat":
        return None
    found, position = [], 0
    for piece in concat.input:
        v = g.const(piece)
        if v is None:
            position += 1  # computed pieces here are single dims (batch, seq)
            continue
        found += [
            ShapeConst(reshape.name, position + i, wanted)
            for i, x in enumerate(v.ravel().tolist())
            if x == wanted
        ]
        position += v.size
    return found


def shape_elements(g: Graph, shape: str) -> list[int | None] | None:
    """A shape vector element by element (None where computed), when it is a constant or a Concat of
    constant and computed pieces (the computed pieces taken as single dims, as reshape_consts does)."""
    value = g.const(shape)
    if value is not None:
        return [int(x) for x in value.ravel().tolist()]
    concat = g.producer.get(shape)
    if concat is None or concat.op_type != "Concat":
        return None
    elements: list[int | None] = []
    for piece in concat.input:
        v = g.const(piece)
        elements += [None] if v is None else [int(x) for x in v.ravel().tolist()]
    return elements


def down_projection(g: Graph, node: onnx.NodeProto) -> Linear:
    """The projection `node` (MatMul or Gemm) as a Linear, with the bias Add after a MatMul."""
    if node.op_type == "Gemm":
        return Linear(node.name, node.input[1], node.input[2] if len(node.input) > 2 else None)
    add = next((c for c in g.consumers.get(node.output[0], []) if c.op_type == "Add"), None)
    width = g.inits[node.input[1]].dims[1]
    bias = None
    if add is not None:
        bias = next((i for i in add.input if g.is_vector(i, width)), None)
    return Linear(node.name, node.input[1], bias, add.name if bias else None)


def scores_matmul(g: Graph, tensor: str) -> onnx.NodeProto | None:
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


def descendants(g: Graph, tensor: str, through: set[str]) -> list[onnx.NodeProto]:
    """The readers of `tensor`, and theirs while they are of the op types `through`."""
    out, frontier = [], [tensor]
    while frontier:
        for c in g.consumers.get(frontier.pop(), []):
            out.append(c)
            if c.op_type in through:
                frontier.append(c.output[0])
    return out
