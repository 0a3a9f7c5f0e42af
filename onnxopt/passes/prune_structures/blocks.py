"""The structures pruning finds (projections, FFN and attention blocks, width-carrying shape
constants), and the graph walks both finders share."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from onnxopt.passes.graph_index import Graph, attributes


@dataclass
class Linear:
    """A projection: y = x @ weight + bias (weight rows are input channels)."""

    node: str
    weight: str
    bias: str | None
    bias_node: str | None = None  # the Add carrying the bias, for MatMul + Add


@dataclass
class ShapeConst:
    """One element of a Reshape target shape that must change when width changes."""

    reshape: str
    index: int  # position in the shape vector
    value: int


@dataclass
class FfnBlock:
    layer: int
    up: Linear
    down: Linear
    width: int
    hidden_input: str  # the down projection's input tensor (activations, F channels)
    shapes: list[ShapeConst] = field(default_factory=list)


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
