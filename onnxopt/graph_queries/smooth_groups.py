"""The activations smoothing can rescale (passes/smooth.py), each with the weights it feeds, and
the reason for every candidate left out."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from onnxopt.graph_queries.graph_index import attributes
from onnxopt.graph_queries.smooth_producers import constant_aliases, gated_products, rms_gammas, smoothable


@dataclass
class SmoothGroup:
    """One activation and the weights it feeds."""

    tensor: str
    producer: str  # node name
    fold: str  # "norm", "attention-v", or "gate" (producer: the up projection's MatMul)
    weights: list[tuple[str, str, bool]] = field(default_factory=list)  # (node, initializer, rows on axis 1)
    others: list[tuple[str, int]] = field(default_factory=list)  # (node, input index) needing original X
    params: tuple[int, ...] = ()  # "norm": the producer's inputs divided by s (gamma, beta)


def _weight_of(node: onnx.NodeProto, tensor: str, inits: dict) -> tuple[str, bool] | None:
    """The initializer whose rows multiply `tensor` in this node, and whether rows lie on axis 1."""
    if not node.input or node.input[0] != tensor or len(node.input) < 2 or node.input[1] not in inits:
        return None
    if inits[node.input[1]].dims.__len__() != 2:
        return None
    if node.op_type in ("MatMul", "Attention") and node.domain in ("", "com.microsoft"):
        return node.input[1], False
    if node.op_type == "Gemm":
        attrs = attributes(node)
        if attrs.get("transA", 0):
            return None
        return node.input[1], bool(attrs.get("transB", 0))
    return None


def find_groups(
    model: onnx.ModelProto, gates: bool = False, explicit: bool = False
) -> tuple[list[SmoothGroup], dict[str, str]]:
    """Smoothable activations, and for every candidate left out, the reason (for the report).
    `gates`: SwiGLU products too (their 1/s folds into the up projection's columns); `explicit`:
    norms and Reshapes get a Mul by 1/s instead of a fold (fold "mul")."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    rms, aliases = rms_gammas(model), constant_aliases(model)
    gated = gated_products(model) if gates else {}
    groups, skipped = [], {}
    for node in graph.node:
        candidate = smoothable(node, rms, aliases, gated)
        if explicit and (node.op_type == "Reshape" if candidate is None else candidate[0] == "norm"):
            candidate = ("mul", (), [])
        if candidate is None:
            continue
        if isinstance(candidate, str):
            skipped[node.name] = candidate
            continue
        fold, params, owned = candidate
        tensor = node.output[0]
        if not node.name:
            skipped[tensor] = "its producer has no name"
            continue
        group = SmoothGroup(tensor, gated.get(tensor, node.name), fold, params=params)
        for consumer in consumers.get(tensor, []):
            if consumer.op_type in ("Shape", "Size"):  # read the shape only, never the values
                continue
            weight = _weight_of(consumer, tensor, inits)
            if weight is None or not consumer.name:
                group.others.extend((consumer.name, i) for i, x in enumerate(consumer.input) if x == tensor)
            else:
                group.weights.append((consumer.name, *weight))
        reason = None
        if not group.weights:
            reason = "feeds no weight"
        elif any(o not in inits for o in owned):
            reason = "its parameters are not constant"
        elif tensor in graph_outputs:
            reason = "is a graph output"
        elif fold in ("attention-v", "gate") and group.others:
            reason = "the attention output also feeds ops without weights"
        if reason:
            skipped[tensor] = reason
        else:
            groups.append(group)
    return groups, skipped
