"""Q -> DQ pairs whose readers are all fp32 ops are removed: the readers take the original tensor.

quantize_static fake-quantizes MatMul outputs and the residual branch: onnxruntime then
requantizes (QLinearMatMul) and dequantizes again before the next fp32 op, two passes over the
tensor and one more rounding. A DQ read by an op that onnxruntime fuses with it stays.
"""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.dq_readers import CPU_DQ_FUSING, split_readers
from onnxopt.passes.rewrite import Edits, RewriteIndex, RewriteRule, rename_input


class FloatQdq(RewriteRule):
    name = "float Q/DQ"
    counts_as = "float_qdq_removed"
    anchor = ("DequantizeLinear",)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        if node.output[0] in index.outputs:
            return "its output is a graph output"
        q = index.made_by(node.input[0], "QuantizeLinear")
        if q is None:
            return "its input is not a QuantizeLinear output"
        if list(q.input[1:]) != list(node.input[1:]):
            return "the QuantizeLinear has another scale or zero point"
        users = index.consumers.get(node.output[0], [])
        if not users:
            return "nothing reads it"
        fusing = sorted({u.op_type for u in split_readers(users, CPU_DQ_FUSING)[0]})
        if fusing:
            return f"read by {', '.join(fusing)}, which onnxruntime fuses with it"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        q = index.made_by(node.input[0], "QuantizeLinear")
        rename_input(index.model.graph, node.output[0], q.input[0])
        edits.remove(node)

    def finish(self, index: RewriteIndex, edits: Edits) -> None:
        # A Q whose every reader went must go now, not with the dead nodes at the end: left in, it
        # would be a second reader of the MatMul output and stop the bias fold after this.
        gone = {id(n) for n in edits.drop}
        edits.remove(
            *[
                n
                for n in index.model.graph.node
                if n.op_type == "QuantizeLinear"
                and any(id(u) in gone for u in index.consumers.get(n.output[0], []))
                and all(id(u) in gone for u in index.consumers.get(n.output[0], []))
            ]
        )
