"""The bias of the op reading an int8 MatMul moves into the MatMul, which adds it while scaling
its int32 accumulators: SkipLayerNormalization's bias input, BiasGelu's (it becomes Gelu), or a
1-D Add (it goes). One elementwise pass over the tensor fewer.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule, rename_input

# Input slot of the bias in each int8 MatMul: its inputs before it may be empty names.
BIAS_SLOT = {"MatMulIntegerToFloat": 6, "DynamicQuantizeMatMul": 4}


def _bias_of(index: RewriteIndex, node: onnx.NodeProto, user: onnx.NodeProto) -> tuple[str | None, str]:
    """The float bias vector `user` adds to `node`'s output, or None and why there is none."""
    width = index.dims(node.input[1])[1]

    def is_bias(name: str) -> bool:
        return name in index.inits and index.dims(name) == [width] and index.inits[name].data_type == 1

    out, reader = node.output[0], f"{user.op_type} {user.name!r}"
    not_bias = f"the bias of its reader {reader} is not a float vector of width {width}"
    if user.op_type == "SkipLayerNormalization" and user.input[0] == out and len(user.input) > 4:
        return (user.input[4], "") if is_bias(user.input[4]) else (None, not_bias)
    if user.op_type == "BiasGelu" and user.input[0] == out:
        return (user.input[1], "") if is_bias(user.input[1]) else (None, not_bias)
    if user.op_type == "Add" and out in user.input and user.output[0] not in index.outputs:
        other = user.input[1] if user.input[0] == out else user.input[0]
        if is_bias(other):
            return other, ""
        return None, f"its reader {reader} adds no float vector of width {width}"
    if user.op_type == "Add":
        return None, f"its reader {reader} writes a graph output"
    return None, f"its reader {reader} has no bias input to hand over"


class BiasFold(RewriteRule):
    name = "bias fold"
    counts_as = "biases_folded"
    anchor = tuple(BIAS_SLOT)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        if node.domain != MS_DOMAIN:
            return f"domain {node.domain!r} is not {MS_DOMAIN}"
        if len(node.input) > BIAS_SLOT[node.op_type]:
            return "it has a bias already"
        weight = index.dims(node.input[1])
        if weight is None or len(weight) != 2:
            return "its weight is not a 2-D initializer"
        user = index.only_consumer(node.output[0])
        if user is None:
            return "its output has several readers or is a graph output"
        bias, reason = _bias_of(index, node, user)
        return reason if bias is None else None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        user = index.only_consumer(node.output[0])
        bias, _ = _bias_of(index, node, user)
        if user.op_type == "SkipLayerNormalization":
            del user.input[4:]
        elif user.op_type == "BiasGelu":
            gelu = helper.make_node(
                "Gelu", [node.output[0]], list(user.output), name=user.name, domain=MS_DOMAIN
            )
            edits.replace(user, [gelu])
        else:  # the Add goes; its readers read the MatMul, which now adds the bias
            edits.remove(user)
            rename_input(index.model.graph, user.output[0], node.output[0])
        while len(node.input) < BIAS_SLOT[node.op_type]:
            node.input.append("")
        node.input.append(bias)
