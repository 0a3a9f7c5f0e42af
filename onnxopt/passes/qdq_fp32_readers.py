"""QDQ for other runtimes: a quantized tensor's fp32 readers take the tensor itself, not its
fake-quantized copy.

quantize_static gives a tensor one Q -> DQ pair and points every reader at the DQ: the MatMuls
that should run in int8, and also the residual branch, Shape, and the un-smoothing Mul after a
smoothed LayerNorm. Those then carry int8 rounding into the skip connection, and OpenVINO has to
materialize the dequantized tensor in fp32 for them beside its int8 layer. NNCF's QDQ keeps the
pair on the quantized branch only. So after this pass a DQ is read only by ops that run it in
int8 (MatMul, Gemm, Conv, Gather); the others read the Q's input.
"""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.dq_readers import QDQ_INT8_READERS, split_readers
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.rewrite import Edits, RewriteIndex, RewriteRule, apply_rule


class Fp32ReadersOffQdq(RewriteRule):
    name = "fp32 readers off Q/DQ"
    counts_as = "fp32_readers_moved"
    anchor = ("DequantizeLinear",)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        q = index.made_by(node.input[0], "QuantizeLinear")
        if q is None:
            return "its input is not a QuantizeLinear output"
        int8, fp32 = split_readers(index.consumers.get(node.output[0], []), QDQ_INT8_READERS)
        if not int8:
            return "no reader runs it in int8"
        if not fp32:
            return "every reader runs it in int8"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        source = index.made_by(node.input[0], "QuantizeLinear").input[0]
        for user in split_readers(index.consumers[node.output[0]], QDQ_INT8_READERS)[1]:
            for k, name in enumerate(user.input):
                if name == node.output[0]:
                    user.input[k] = source


class QdqFp32Readers(FunctionalPass):
    """details: `moved` (DQs whose fp32 readers now read the tensor itself), `skipped`."""

    name = "qdq-fp32-readers"

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        result = apply_rule(Fp32ReadersOffQdq(), out)
        return PassResult(out, result.rewritten > 0, {"moved": result.rewritten})
