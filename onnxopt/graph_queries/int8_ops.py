"""The op types a graph is made of, counted (every op: what each step reports before and after;
the int8 ones: what the quantize and layout steps report); and the ops that show a graph is
quantized already, in 8 bits or fewer."""

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


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


def int8_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts = Counter(n.op_type for n in model.graph.node if n.op_type in INT8_OPS)
    return dict(sorted(counts.items()))


# Weight-only quantization, onnxopt's int4 and 8-bit MatMulNBits among them, and onnxruntime's
# other low-bit kernels: none is an INT8_OPS op, so an int4 model once passed as fp32 and was
# quantized again, growing ("1.0x smaller") where it should have been refused.
WEIGHT_ONLY_OPS = ("MatMulNBits", "GatherBlockQuantized", "MatMulBnb4", "MatMulFpQ4")
# onnxruntime's quantized ops beyond those listed (QLinearAdd, QLinearConv, QOrderedMatMul...).
_QUANTIZED_PREFIXES = ("QLinear", "QOrdered")


def quantized_ops(model: onnx.ModelProto) -> list[str]:
    """The op types in `model` that show it is quantized already, sorted; [] for a float model."""
    return sorted(
        {
            n.op_type
            for n in model.graph.node
            if n.op_type in INT8_OPS + WEIGHT_ONLY_OPS or n.op_type.startswith(_QUANTIZED_PREFIXES)
        }
    )
