"""Where a graph can be cut: the tensors that carry everything a later part of the graph needs
from the part below a boundary (a residual stream, and what every layer reads: rotary caches,
attention masks). The prune re-fits start each probe there, not at the model's inputs."""

from __future__ import annotations

import onnx


def static_tensors(graph: onnx.GraphProto) -> set[str]:
    """Initializers and what nodes compute from them alone (Constant, shape arithmetic on them):
    the same for every batch, so a cut graph keeps their producers instead of being fed them."""
    static = {t.name for t in graph.initializer}
    for node in graph.node:  # nodes are in topological order
        has_graph = any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute)
        if not has_graph and all(not i or i in static for i in node.input):
            static.update(o for o in node.output if o)
    return static


def ancestor_nodes(graph: onnx.GraphProto, tensors: list[str]) -> set[int]:
    """The indices of the nodes `tensors` depend on."""
    return walk_up(graph, tensors)[0]


def walk_up(graph: onnx.GraphProto, tensors: list[str], stop=frozenset()) -> tuple[set[int], set[str]]:
    """The indices of the nodes `tensors` depend on, and the names the walk met; it goes no
    further up than the names in `stop` (values fed instead of computed)."""
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
    seen, stack, nodes = set(), list(tensors), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        k = None if name in stop else producer.get(name)
        if k is not None and k not in nodes:
            nodes.add(k)
            stack.extend(i for i in graph.node[k].input if i)
    return nodes, seen


def frontier(graph: onnx.GraphProto, boundary: str, wanted: list[str]) -> list[str]:
    """The tensors computed at or below `boundary` (its ancestors) that the nodes computing `wanted`
    above it read: with their values, `wanted` needs nothing below the boundary but the graph's
    inputs and constants. `wanted` names computed below the boundary are in it themselves."""
    below = ancestor_nodes(graph, [boundary])
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
    static = static_tensors(graph)
    seen, stack, cut = set(), list(wanted), set()
    while stack:
        name = stack.pop()
        if name in seen or name in static:
            continue
        seen.add(name)
        k = producer.get(name)
        if k is None:  # a graph input: fed with every batch
            continue
        if k in below:
            cut.add(name)
            continue
        stack.extend(i for i in graph.node[k].input if i)
    return sorted(cut)


def same_nodes_below(before: onnx.GraphProto, after: onnx.GraphProto, tensors: list[str]) -> bool:
    """Whether every node computing `tensors` in `after` is a node of `before`, unchanged (inputs,
    outputs, attributes), reading unchanged initializers: values of `tensors` taken from `before`
    are then also `after`'s."""
    old = {n.SerializeToString() for n in before.node}
    below = [after.node[k] for k in ancestor_nodes(after, tensors)]
    if not all(n.SerializeToString() in old for n in below):
        return False
    read = {i for n in below for i in n.input}
    was = {t.name: _fingerprint(t) for t in before.initializer if t.name in read}
    return all(was.get(t.name) == _fingerprint(t) for t in after.initializer if t.name in read)


def _fingerprint(tensor: onnx.TensorProto):
    """A tensor rewritten in place under its name (prune_fold gives a node's pruned tensor one
    name however often it is folded) changes this: its bytes when small, else its shape, type,
    size and place on disk, without copying a large tensor's data."""
    if tensor.ByteSize() <= 1 << 20:
        return tensor.SerializeToString()
    external = tuple((e.key, e.value) for e in tensor.external_data)
    return tuple(tensor.dims), tensor.data_type, tensor.ByteSize(), external
