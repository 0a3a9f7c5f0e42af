"""In-place clean-ups the passes share: unused initializers, nodes no output needs, Identity
nodes a rewrite left unread."""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.cut_points import walk_up
from onnxopt.io.external_data import graph_reads


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Delete the initializers no node (subgraphs included) or graph output reads, in place:
    re-adding the kept ones would copy them through serialization, which protobuf refuses for a
    tensor past 2 GB."""
    used = graph_reads(graph)
    for k in reversed(range(len(graph.initializer))):
        if graph.initializer[k].name not in used:
            del graph.initializer[k]


def keep_ancestors(graph: onnx.GraphProto, tensors: list[str], cut: set[str] = frozenset()) -> set[str]:
    """Keep only the nodes `tensors` depend on (and the initializers those read), in place.
    The walk stops at the names in `cut` (values the caller will feed): their producers are not
    kept for them, and the cut names the walk reached are returned. A graph with subgraphs (If,
    Loop) is left whole: they may read outer names the walk misses."""
    if any(a.type == onnx.AttributeProto.GRAPH for n in graph.node for a in n.attribute):
        return set()
    keep, met = walk_up(graph, tensors, cut)
    reached = met & set(cut)
    if len(keep) < len(graph.node):
        nodes = [n for k, n in enumerate(graph.node) if k in keep]
        del graph.node[:]
        graph.node.extend(nodes)
    for node in graph.node:  # a kept node's other output that is fed now: renamed, not produced twice
        for k, name in enumerate(node.output):
            if name in reached:
                node.output[k] = f"{name}/unread"
    drop_unused_initializers(graph)
    return reached


def drop_orphaned_identities(read_before: set[str], after: onnx.ModelProto, aliases) -> None:
    """Remove from `after` the Identity nodes among `aliases` that were read before (`read_before`,
    from `graph_reads`) and are no longer (their readers now read rescaled copies), in place."""
    was_read = read_before & set(aliases)
    while True:
        now = graph_reads(after.graph)
        orphans = {
            n.output[0]
            for n in after.graph.node
            if n.op_type == "Identity" and n.output[0] in was_read and n.output[0] not in now
        }
        if not orphans:
            return
        kept = [n for n in after.graph.node if not (n.op_type == "Identity" and n.output[0] in orphans)]
        del after.graph.node[:]
        after.graph.node.extend(kept)
