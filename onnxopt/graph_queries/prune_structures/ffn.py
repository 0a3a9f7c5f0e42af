"""FFN blocks: an up projection of width F, an elementwise activation, a down projection with F rows.

Gated FFNs (Llama's SwiGLU down(silu(gate(x)) * up(x)), GeGLU) have two projections of width F
meeting elementwise: neuron j is column j of both. When gate and up are one packed projection of
width 2F cut in halves (Phi-3's gate_up_proj, ModernBERT's Wi), neuron j is columns j and F + j.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures.blocks import (
    FfnBlock,
    Linear,
    ShapeConst,
    down_projection,
    linear_ending_at,
    reshape_consts,
)
from onnxopt.graph_queries.prune_structures.sections import Section, packed_section, scales

_ELEMENTWISE = {
    "Mul",
    "Add",
    "Div",
    "Sub",
    "Erf",
    "Tanh",
    "Pow",
    "Sigmoid",
    "Relu",
    "Gelu",
    "FastGelu",
    "Identity",
    "Cast",
    "Sqrt",
    "Swish",  # SiLU as one op (opset 24)
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Neg",
    "Exp",
    "Reciprocal",
}


@dataclass
class _Walk:
    """What lies between a down projection and the projections that feed it, walked upward."""

    width: int
    region: set[str] = field(default_factory=set)
    shapes: list[ShapeConst] = field(default_factory=list)
    direct: dict[str, tuple[Linear, str]] = field(default_factory=dict)  # node -> (Linear, output)
    sections: list[Section] = field(default_factory=list)


def find_ffn_blocks(g: Graph) -> list[FfnBlock]:
    blocks = []
    for node in g.model.graph.node:
        if (
            node.op_type not in ("MatMul", "Gemm")
            or len(node.input) < 2
            or g.weight_2d(node.input[1]) is None
        ):
            continue
        walk = _walk_up(g, node)
        block = _block(g, node, walk) if walk is not None else None
        if block is not None:
            block.layer = len(blocks)
            blocks.append(block)
    return blocks


def _walk_up(g: Graph, node: onnx.NodeProto) -> _Walk | None:
    """Up from the candidate down projection `node` through elementwise ops (and Reshapes whose
    target carries F) to projections of width F, or to sections F wide of a packed projection."""
    walk = _Walk(g.inits[node.input[1]].dims[0])
    start = node.input[0]
    frontier = [start]
    while frontier:
        tensor = frontier.pop()
        found = linear_ending_at(g, tensor)
        if found is not None and found[1] == walk.width and tensor != start:
            walk.direct.setdefault(found[0].node, (found[0], tensor))
            continue
        producer = g.producer.get(tensor)
        if producer is None:
            return None
        if producer.op_type in ("Split", "Slice") and tensor != start:
            # One Split has an output per section: each is met on its own, by tensor.
            section = packed_section(g, producer, tensor)
            if section is None or section.stop - section.start != walk.width:
                return None
            if all(s.output != tensor for s in walk.sections):
                walk.sections.append(section)
            walk.region.add(producer.name)
            continue
        if producer.name in walk.region:
            continue
        walk.region.add(producer.name)
        if producer.op_type == "Reshape":
            consts = reshape_consts(g, producer, walk.width)
            if consts is None:
                return None
            walk.shapes += consts
            frontier.append(producer.input[0])
        elif producer.op_type in _ELEMENTWISE:
            for i in producer.input:
                c = g.const(i)
                if c is None:
                    frontier.append(i)
                elif c.size != 1:
                    return None
        else:
            return None
    return walk


def _block(g: Graph, node: onnx.NodeProto, walk: _Walk) -> FfnBlock | None:
    """The FFN block a finished walk describes: one projection, two gated ones, or the halves of
    one packed projection; None for anything else."""
    down, width = down_projection(g, node), walk.width
    direct = list(walk.direct.values())
    if direct and not walk.sections and len(direct) <= 2:
        # Gate and up read the same input: two projections of one layer, not a join of two layers.
        if len({g.nodes[lin.node].input[0] for lin, _ in direct}) != 1:
            return None
        if not all(_consumed_inside(g, out, walk.region) for _, out in direct):
            return None
        up, gate = direct[0][0], direct[1][0] if len(direct) == 2 else None
        return FfnBlock(0, up, down, width, node.input[0], walk.shapes, gate)
    if direct or not walk.sections or len({s.linear.node for s in walk.sections}) != 1:
        return None
    first = walk.sections[0]
    offsets = sorted(s.start for s in walk.sections)
    if offsets != list(range(0, first.width, width)) or not all(scales(g, s, width) for s in walk.sections):
        return None  # every column of the packed output must belong to exactly one section
    if not _consumed_inside(g, first.packed, walk.region):
        return None
    shapes = list(walk.shapes)
    for s in walk.sections:
        shapes += [c for c in s.consts if c not in shapes]
    return FfnBlock(0, first.linear, down, width, node.input[0], shapes, None, offsets)


def _consumed_inside(g: Graph, tensor: str, region: set[str]) -> bool:
    """Whether every reader of a projection's output is in the block (or reads only its shape):
    slicing its columns must not change what anything else sees."""
    return all(c.name in region or c.op_type == "Shape" for c in g.consumers.get(tensor, []))
