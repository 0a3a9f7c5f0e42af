"""Graph rewrites as rules: pattern -> check -> rewrite (onnxscript's rewriter rules, one rule per
file as in OnnxSlim's fusions).

A rule names the op types its pattern starts from (`anchor`); every node of those types is a
candidate. `check` says why a candidate does not match (None: it matches), `rewrite` replaces it.
`apply_rule` walks the candidates in graph order, checking and rewriting one before the next, so
a rule sees the rewrites it already made to node inputs; nodes it drops or replaces go at the end
(`Edits`), so the walk is over a stable node list. A candidate that does not match is left as it
was, with its reason: the result is never wrong, only less fast.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import onnx

from onnxopt.graph_queries.graph_index import Graph

MS_DOMAIN = "com.microsoft"


class RewriteIndex(Graph):
    """Graph lookups plus the questions rewrites ask; built once per rule, before its walk."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__(model)
        self.outputs = {o.name for o in model.graph.output}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def made_by(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def dims(self, name: str) -> list[int] | None:
        return list(self.inits[name].dims) if name in self.inits else None


@dataclass
class Edits:
    """Node-list changes a rule's rewrites make, applied once its walk is over."""

    drop: list[onnx.NodeProto] = field(default_factory=list)
    swaps: dict[int, list[onnx.NodeProto]] = field(default_factory=dict)

    def replace(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        """`nodes` take `node`'s place in the list, which keeps it topologically sorted."""
        self.swaps[id(node)] = nodes

    def remove(self, *nodes: onnx.NodeProto) -> None:
        self.drop.extend(nodes)


class RewriteRule(abc.ABC):
    name: str  # label of the rule, leading each reason it gives
    counts_as: str  # key of its rewrite count in the pass's details
    anchor: tuple[str, ...]  # op types of the node a match starts from

    @abc.abstractmethod
    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        """Why `node` does not match the pattern, or None when it does."""

    @abc.abstractmethod
    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        """Rewrite a matched `node`: in place for input changes, through `edits` for the list."""

    def finish(self, index: RewriteIndex, edits: Edits) -> None:
        """After the walk, before `edits` apply: clean-ups that need every rewrite known."""
        return None  # most rules have none


@dataclass
class RuleResult:
    rewritten: int
    skipped: dict[str, str]  # candidate node name -> why it was not rewritten


def candidate_name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def apply_rule(rule: RewriteRule, model: onnx.ModelProto) -> RuleResult:
    """Run one rule over `model`, in place."""
    index, edits = RewriteIndex(model), Edits()
    result = RuleResult(0, {})
    for node in model.graph.node:
        if node.op_type not in rule.anchor:
            continue
        reason = rule.check(index, node)
        if reason is None:
            rule.rewrite(index, node, edits)
            result.rewritten += 1
        else:
            result.skipped[candidate_name(node)] = f"{rule.name}: {reason}"
    rule.finish(index, edits)
    replace_nodes(model.graph, edits.drop, edits.swaps)
    return result


def declare_ms_domain(model: onnx.ModelProto) -> None:
    """Import the com.microsoft opset (version 1) into `model` unless it does already: what the
    contrib ops a rewrite writes (MatMulNBits, GroupQueryAttention, ...) need to load."""
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))


def replace_nodes(
    graph: onnx.GraphProto, old: list[onnx.NodeProto], new: dict[int, list[onnx.NodeProto]]
) -> None:
    """Drop `old` nodes; `new` maps a node's id to the nodes taking its place, in order."""
    gone = {id(n) for n in old}
    nodes = []
    for n in graph.node:
        if id(n) in new:
            nodes.extend(new[id(n)])
        elif id(n) not in gone:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)


def rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Point every reader of `old` at `new`; callers make sure `old` is not a graph output."""
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name == old:
                n.input[k] = new
