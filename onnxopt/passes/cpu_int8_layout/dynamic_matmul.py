"""DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales)  =>  DynamicQuantizeMatMul.

quantize_dynamic spells the int8 MatMul as four ops; the fused kernel quantizes the activation,
multiplies and rescales in one pass over the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule


@dataclass
class _Match:
    dql: onnx.NodeProto
    cast: onnx.NodeProto
    mul: onnx.NodeProto
    scales: onnx.NodeProto  # Mul of the activation scale and the weight scale
    weight_scale: str


def _match(index: RewriteIndex, node: onnx.NodeProto) -> _Match | str:
    """The nodes around a MatMulInteger candidate, or why they are not the pattern."""
    if len(node.input) < 2 or node.input[1] not in index.inits:
        return "the weight is not an initializer"
    dql = index.made_by(node.input[0], "DynamicQuantizeLinear")
    if dql is None:
        return "input 0 is not a DynamicQuantizeLinear output"
    cast = index.only_consumer(node.output[0])
    if cast is None or cast.op_type != "Cast":
        return "its output is not read by one Cast alone"
    mul = index.only_consumer(cast.output[0])
    if mul is None or mul.op_type != "Mul":
        return "the Cast is not read by one Mul alone"
    scales_name = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
    scales = index.made_by(scales_name, "Mul")
    if scales is None or dql.output[1] not in scales.input:
        return "the rescale is not by the activation scale times a weight scale"
    weight_scale = scales.input[1] if scales.input[0] == dql.output[1] else scales.input[0]
    if weight_scale not in index.inits:
        return "the weight scale is not an initializer"
    if len(index.consumers.get(dql.output[0], [])) != 1:
        return "the quantized activation has other readers"
    return _Match(dql, cast, mul, scales, weight_scale)


class DynamicMatMul(RewriteRule):
    name = "dynamic MatMul"
    counts_as = "dynamic_matmuls"
    anchor = ("MatMulInteger",)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        found = _match(index, node)
        return found if isinstance(found, str) else None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        m = _match(index, node)
        assert isinstance(m, _Match)
        wzp = node.input[3] if len(node.input) > 3 else ""
        fused = helper.make_node(
            "DynamicQuantizeMatMul",
            [m.dql.input[0], node.input[1], m.weight_scale, wzp],
            list(m.mul.output),
            name=node.name,
            domain=MS_DOMAIN,
        )
        edits.replace(m.mul, [fused])
        edits.remove(m.dql, node, m.cast)
        if len(index.consumers.get(m.scales.output[0], [])) == 1:
            edits.remove(m.scales)
