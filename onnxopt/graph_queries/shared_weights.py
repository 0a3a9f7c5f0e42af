"""Weights shared between layers (ALBERT reuses one layer's weights in every layer).

Pruning slices a weight for the layer it belongs to; a weight read by several layers cannot be
sliced for one of them, and copying it per layer would make the model larger, not smaller (a
tiny ALBERT "pruned" that way grew from 83,584 to 100,260 parameters while the report said -50%).
So such blocks are left whole, and the report says so.
"""

from __future__ import annotations

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures import FfnBlock, block_linears


def without_shared_weights(g: Graph, blocks: list) -> tuple[list, list[str]]:
    """Blocks whose every projection owns its weight, and a note for each block left whole because
    a weight is shared with another layer: slicing it for one layer would break the others, and
    copying it per layer would make the model larger, not smaller."""
    kept, notes = [], []
    for block in blocks:
        ffn = isinstance(block, FfnBlock)
        shared = next((lin for lin in block_linears(block) if g.shared_weight(lin.weight)), None)
        if shared is None:
            kept.append(block)
        else:
            kind = "FFN" if ffn else "attention"
            notes.append(f"{shared.node}: {kind} weights are shared with another layer; kept whole")
    return kept, notes


def shared_linears(g: Graph) -> int:
    """MatMul/Gemm nodes whose weight feeds other nodes too (ALBERT-style layer sharing)."""
    return sum(
        1
        for n in g.model.graph.node
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and g.shared_weight(n.input[1])
    )
