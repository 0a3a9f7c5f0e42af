"""Lookups over a ModelProto (the in-place clean-ups passes share are in passes/graph_edits.py)."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from onnxopt.io import weight_store


class Graph:
    """Lookups over one ModelProto: producers, consumers, initializers and constant values."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = {n.name: n for n in model.graph.node}
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name: str):
        if name in self.inits:
            return weight_store.array(self.inits[name])
        node = self.producer.get(name)
        if (
            node is not None
            and node.op_type == "Constant"
            and node.attribute
            and node.attribute[0].name == "value"
        ):
            return numpy_helper.to_array(node.attribute[0].t)
        if node is not None and node.op_type == "Identity":  # exporters share equal tensors this way
            return self.const(node.input[0])
        return None

    def is_vector(self, name: str, size: int) -> bool:
        value = self.const(name)
        return value is not None and value.shape == (size,)

    def weight_2d(self, name: str):
        return self.inits[name] if name in self.inits and len(self.inits[name].dims) == 2 else None

    def uses(self, name: str) -> int:
        """How many nodes read `name`, counting those that read it through Identity nodes (how
        exporters share one tensor between layers, as ALBERT's layers share their weights)."""
        count = 0
        for user in self.consumers.get(name, []):
            count += self.uses(user.output[0]) if user.op_type == "Identity" else 1
        return count

    def shared_weight(self, name: str) -> bool:
        """Whether the weight `name` (an initializer, or an Identity of one) feeds several nodes."""
        node = self.producer.get(name)
        while node is not None and node.op_type == "Identity":
            name = node.input[0]
            node = self.producer.get(name)
        return name in self.inits and self.uses(name) > 1


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
