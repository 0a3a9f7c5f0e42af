"""The two widths of a mixed-bits model (mixed_bits.py): each MatMul's simulated error at the low
width, and one model spliced from a model quantized at each width."""

from __future__ import annotations

import numpy as np
import onnx

from onnxopt.graph_queries.weight_grids import weight_only_error
from onnxopt.io import weight_store
from onnxopt.passes.graph_edits import keep_ancestors
from onnxopt.quantize.calibrate import collect_channel_stats


def matmul_errors(
    model: onnx.ModelProto, feeds, names: list[str], bits: int, block: int, algo: str = "rtn"
) -> dict[str, float]:
    """Each named MatMul's simulated relative output error at `bits` bits, on its own activations."""
    weights = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node if n.name in names}
    inputs = sorted({nodes[name].input[0] for name in names})
    stats = collect_channel_stats(model, feeds, inputs, max_rows=256)
    errors = {}
    for name in names:
        node = nodes[name]
        w = weight_store.array(weights[node.input[1]]).astype(np.float64)
        errors[name] = weight_only_error(stats[node.input[0]], [w], np.ones(w.shape[0]), bits, block, algo)
    return errors


def splice(low: onnx.ModelProto, high: onnx.ModelProto, outputs: set[str]) -> onnx.ModelProto:
    """`low` with the nodes writing `outputs` taken from `high` (same tensor names, other widths),
    each with the initializers it reads. Both quantizers name scales after the weight, so a name
    the two models share is renamed on the side of `high`."""
    high_inits = {t.name: t for t in high.graph.initializer}
    model = onnx.ModelProto()
    model.CopyFrom(low)
    taken = {}
    for node in high.graph.node:
        if node.output and node.output[0] in outputs:
            taken[node.output[0]] = onnx.NodeProto()
            taken[node.output[0]].CopyFrom(node)
    nodes = [taken.get(n.output[0], n) if n.output else n for n in model.graph.node]
    low_reads = {name for n in nodes if not (n.output and n.output[0] in taken) for name in n.input}
    renamed = {}
    for node in taken.values():
        for i, name in enumerate(node.input):
            if name in high_inits:
                renamed[name] = f"{name}.spliced" if name in low_reads else name
                node.input[i] = renamed[name]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    initializers = [t for t in model.graph.initializer if t.name in low_reads]
    for old, new in sorted(renamed.items()):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(high_inits[old])
        tensor.name = new
        initializers.append(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    # int4 offsets: an input whose readers all went wide leaves its block sums unread.
    keep_ancestors(model.graph, [o.name for o in model.graph.output])
    return model
