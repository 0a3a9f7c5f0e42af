"""Sections of packed projections: one MatMul/Gemm whose output is cut on its last axis by a Split
or by Slices (GPT-2's c_attn into Q, K, V; Phi-3's qkv_proj and gate_up_proj; ModernBERT's Wi).

Folding slices the packed weight section by section, so the cut must follow: constant sizes and
bounds are recorded to be scaled with the units kept; bounds the graph computes from the packed
output's own width (torch's chunk) are evaluated here, and accepted only where they scale too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from onnxopt.graph_queries.graph_index import Graph, attributes
from onnxopt.graph_queries.prune_structures.blocks import Linear, ShapeConst, linear_ending_at, reshape_consts

_SAME_RANK = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Cast", "Identity", "Dropout",
    "Erf", "Tanh", "Sigmoid", "Relu", "Gelu", "Softmax", "LayerNormalization",
    "SimplifiedLayerNormalization",
}  # fmt: skip


@dataclass
class Section:
    """Columns start .. stop of a projection's output (all of it for a projection read whole)."""

    linear: Linear
    width: int  # the projection's output width
    start: int
    stop: int
    output: str  # the tensor that carries the section
    consts: list[ShapeConst] = field(default_factory=list)  # sizes and bounds to scale when folding
    computed: list[str] = field(default_factory=list)  # bounds the graph computes, checked to scale
    packed: str = ""  # the tensor that is cut (what computed bounds read the width of)


def whole(linear: Linear, width: int, output: str) -> Section:
    return Section(linear, width, 0, width, output)


def packed_section(g: Graph, node: onnx.NodeProto, output: str) -> Section | None:
    """The columns `output` of a Split or Slice `node` takes of the packed projection it cuts, or
    None when `node` does not cut a projection's output on its last axis in a way we can follow."""
    data = node.input[0]
    found, consts = linear_ending_at(g, data), []
    reshape = g.producer.get(data)
    if found is None and reshape is not None and reshape.op_type == "Reshape":
        # GPT-2's Conv1D: the projection runs on (batch*seq, P), reshaped to (batch, seq, P) first.
        found = linear_ending_at(g, reshape.input[0])
        recorded = reshape_consts(g, reshape, found[1]) if found else None
        if recorded is None:
            return None
        consts += recorded
    if found is None or not _last_axis(g, node, data):
        return None
    linear, width = found
    if node.op_type == "Split":
        bounds = _split_bounds(g, node, output, width)
    else:
        bounds = _slice_bounds(g, node, data, width)
    if bounds is None:
        return None
    (start, stop), more, computed = bounds
    return Section(linear, width, start, stop, output, consts + more, computed, data)


def _last_axis(g: Graph, node: onnx.NodeProto, data: str) -> bool:
    if node.op_type == "Split":
        axes = [attributes(node).get("axis", 0)]
    else:
        value = g.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        axes = None if value is None else value.ravel().tolist()
        steps = g.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if steps is not None and steps.ravel().tolist() != [1]:
            return False
    if axes is None or len(axes) != 1:
        return False
    return axes[0] == -1 or axes[0] == (rank_of(g, data) or 0) - 1


def _split_bounds(g: Graph, node: onnx.NodeProto, output: str, width: int):
    attrs = attributes(node)
    if "split" in attrs:
        return None  # sizes in an attribute (opset < 13): not rewritten here
    if len(node.input) > 1 and node.input[1]:
        value = g.const(node.input[1])
        if value is None:
            return None
        sizes = [int(x) for x in value.ravel().tolist()]
        consts = [ShapeConst(node.name, i, s) for i, s in enumerate(sizes)]
    else:  # equal parts: they stay equal when every part loses the same share
        if width % len(node.output):
            return None
        sizes, consts = [width // len(node.output)] * len(node.output), []
    if sum(sizes) != width:
        return None
    k = list(node.output).index(output)
    start = sum(sizes[:k])
    return (start, start + sizes[k]), consts, []


def _slice_bounds(g: Graph, node: onnx.NodeProto, data: str, width: int):
    bounds, consts, computed = [], [], []
    for position in (1, 2):
        tensor = node.input[position]
        value = g.const(tensor)
        if value is None:
            found = int_value(g, tensor, data, width)
            if found is None:
                return None
            computed.append(tensor)
        else:
            if value.size != 1:
                return None
            found = int(value.ravel()[0])
            if 0 < abs(found) <= width:  # past the end (INT64_MAX) means "to the end": it stays
                consts.append(ShapeConst(node.name, 0, found, position))
        bounds.append(min(found + width if found < 0 else found, width))
    if not 0 <= bounds[0] < bounds[1]:
        return None
    return (bounds[0], bounds[1]), consts, computed


def int_value(g: Graph, tensor: str, packed: str, width: int) -> int | None:
    """A one-element integer the graph computes from constants and the last dim of `packed` (how
    torch exports chunk: Shape, Gather(-1), then arithmetic), evaluated as if that dim were `width`."""
    value = g.const(tensor)
    if value is not None:
        return int(value.ravel()[0]) if value.size == 1 else None
    node = g.producer.get(tensor)
    if node is None:
        return None
    if node.op_type in ("Cast", "Unsqueeze", "Squeeze", "Identity", "Reshape"):
        return int_value(g, node.input[0], packed, width)
    if node.op_type in ("Gather", "Slice"):
        shape = g.producer.get(node.input[0])
        index = g.const(node.input[1])
        last = index is not None and index.ravel().tolist() == [-1]
        if shape is None or shape.op_type != "Shape" or shape.input[0] != packed or not last:
            return None
        return width if not attributes(shape) else None
    if node.op_type in ("Add", "Sub", "Mul", "Div"):
        a, b = (int_value(g, i, packed, width) for i in node.input)
        if a is None or b is None or (node.op_type == "Div" and b == 0):
            return None
        if node.op_type == "Div":  # integer Div truncates toward zero
            return abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
        return {"Add": a + b, "Sub": a - b, "Mul": a * b}[node.op_type]
    return None


def scales(g: Graph, section: Section, units: int) -> bool:
    """Whether the bounds the graph computes for `section` move with the units kept, as the
    recorded constants do: evaluated with the packed width cut to 1 and to units - 1 units."""
    for tensor in section.computed:
        full = int_value(g, tensor, section.packed, section.width)
        for kept in {1, units - 1} - {0}:
            if section.width * kept % units:
                return False
            cut = int_value(g, tensor, section.packed, section.width * kept // units)
            if full is None or cut is None or cut * units != full * kept:
                return False
    return True


def rank_of(g: Graph, tensor: str) -> int | None:
    """The rank of `tensor`, followed up through rank-keeping ops to a Reshape, Gemm, Transpose,
    an embedding Gather or a graph input; None where that takes another op."""
    inputs = {i.name: i for i in g.model.graph.input}
    extra = 0
    for _ in range(len(g.model.graph.node) + 1):
        value = g.const(tensor)
        if value is not None:
            return value.ndim + extra
        if tensor in inputs:
            shape = inputs[tensor].type.tensor_type
            return len(shape.shape.dim) + extra if shape.HasField("shape") else None
        node = g.producer.get(tensor)
        if node is None:
            return None
        if node.op_type == "Reshape":
            value = g.const(node.input[1])
            concat = g.producer.get(node.input[1])
            if value is not None:
                return value.size + extra
            if concat is not None and concat.op_type == "Concat":
                return sum(1 if g.const(i) is None else g.const(i).size for i in concat.input) + extra
            return None
        if node.op_type == "Gemm":
            return 2 + extra
        if node.op_type == "Transpose" and "perm" in attributes(node):
            return len(attributes(node)["perm"]) + extra
        if node.op_type == "Gather" and g.const(node.input[0]) is not None:
            extra += g.const(node.input[0]).ndim - 1  # an embedding table: indices' rank + 1
            tensor = node.input[1]
        elif node.op_type in _SAME_RANK or (
            node.op_type == "MatMul" and g.weight_2d(node.input[1]) is not None
        ):
            tensor = next((i for i in node.input if g.const(i) is None), node.input[0])
        else:
            return None
    return None
