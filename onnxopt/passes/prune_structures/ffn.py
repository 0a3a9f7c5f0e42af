"""FFN blocks: an up projection of width F, an elementwise activation, a down projection with F rows."""

from __future__ import annotations

from onnxopt.passes.graph_index import Graph
from onnxopt.passes.prune_structures.blocks import FfnBlock, down_projection, linear_ending_at, reshape_consts

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
}


def find_ffn_blocks(g: Graph) -> list[FfnBlock]:
    blocks = []
    for node in g.model.graph.node:
        if (
            node.op_type not in ("MatMul", "Gemm")
            or len(node.input) < 2
            or g.weight_2d(node.input[1]) is None
        ):
            continue
        width = g.inits[node.input[1]].dims[0]
        start = node.input[0]
        region, shapes, frontier, up = set(), [], [start], None
        ok = True
        while frontier and ok:
            tensor = frontier.pop()
            found = linear_ending_at(g, tensor)
            if found is not None and found[1] == width and tensor != start:
                up = up or found[0]
                ok = up.node == found[0].node
                continue
            producer = g.producer.get(tensor)
            if producer is None or producer.name in region:
                ok = producer is not None
                continue
            region.add(producer.name)
            if producer.op_type == "Reshape":
                consts = reshape_consts(g, producer, width)
                if consts is None:
                    ok = False
                    continue
                shapes += consts
                frontier.append(producer.input[0])
            elif producer.op_type in _ELEMENTWISE:
                for i in producer.input:
                    c = g.const(i)
                    if c is None:
                        frontier.append(i)
                    elif c.size != 1:
                        ok = False
            else:
                ok = False
        if ok and up is not None:
            blocks.append(FfnBlock(len(blocks), up, down_projection(g, node), width, start, shapes))
    return blocks
