"""The op types an int8 graph is made of, counted: what the quantize and layout steps report."""

from __future__ import annotations

from collections import Counter

import onnx

INT8_OPS = (
    "QLinearMatMul",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QAttention",
    "QEmbedLayerNormalization",
    "QGemm",
    "DequantizeLinear",
    "QuantizeLinear",
    "DynamicQuantizeLinear",
)


def int8_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(n.op_type for n in model.graph.node if n.op_type in INT8_OPS)
    return dict(sorted(counts.items()))
