"""DQ(x_u8) -> MatMul <- DQ(W_s8)  =>  MatMulIntegerToFloat(x_u8, W_s8, scales, zero points).

onnxruntime's QDQ fusion at load time did not match these on a fused BERT graph; the int8 kernel
reads the quantized tensors directly and scales its int32 accumulators to float.
"""

from __future__ import annotations

import onnx
from onnx import helper

from onnxopt.graph_queries.graph_index import attributes
from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule


class StaticMatMul(RewriteRule):
    name = "static MatMul"
    counts_as = "static_matmuls"
    anchor = ("MatMul",)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        if node.domain not in ("", "ai.onnx"):
            return f"domain {node.domain!r} is not ONNX's"
        act = index.made_by(node.input[0], "DequantizeLinear")
        wdq = index.made_by(node.input[1], "DequantizeLinear")
        if act is None:
            return "input 0 is not a DequantizeLinear output"
        if wdq is None:
            return "input 1 is not a DequantizeLinear output"
        if wdq.input[0] not in index.inits:
            return "the weight's DequantizeLinear does not read an initializer"
        if act.input[0] in index.inits:
            return "input 0 dequantizes an initializer, not an activation"
        wdims, wscale = index.dims(wdq.input[0]), index.dims(wdq.input[1])
        if len(wdims) != 2:
            return f"the weight is {len(wdims)}-D, not 2-D"
        if not (wscale == [] or (wscale == [wdims[1]] and attributes(wdq).get("axis", 1) in (1, -1))):
            return "the weight scale is neither per tensor nor per output column"
        if index.dims(act.input[1]) not in ([], [1]):
            return "the activation scale is not one constant"
        if index.inits[wdq.input[0]].data_type != onnx.TensorProto.INT8:
            return "the weight is not int8"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        act = index.made_by(node.input[0], "DequantizeLinear")
        wdq = index.made_by(node.input[1], "DequantizeLinear")
        inputs = [act.input[0], wdq.input[0], act.input[1], wdq.input[1]]
        inputs += [act.input[2] if len(act.input) > 2 else "", wdq.input[2] if len(wdq.input) > 2 else ""]
        edits.replace(
            node,
            [
                helper.make_node(
                    "MatMulIntegerToFloat", inputs, list(node.output), name=node.name, domain=MS_DOMAIN
                )
            ],
        )
