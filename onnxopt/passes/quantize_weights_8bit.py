"""8-bit weight-only MatMulNBits written one weight at a time through the weight store.

The grid is onnxruntime's 8-bit RTN (min-max with 0 inside every block, integer zero points), the
same as MatMulNBitsQuantizer's, but that quantizer takes the whole model as one protobuf: it
loaded every weight of a model with external data into memory (quantize --dynamic of the
Qwen2.5-0.5B shape: 9.3 GB peak for 1.6 GB of weights; the 8-bit LM head after int4 of the 3B
shape, 4.4 GB). Here each weight is read, quantized and written to the store's scratch file before
the next (io/weight_store.py), so memory holds one weight and the graph.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxopt.graph_queries.weight_grids import zero_range_levels
from onnxopt.io import weight_store
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers
from onnxopt.passes.quantize_weights_offset import blocks_reason
from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule, apply_rule, declare_ms_domain

LEVELS_8BIT = 255
HALF_TYPES = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
# fp16/bf16 weights stay with onnxruntime's quantizer (its scales take the weight's type).
HALF_REASON = "its weight is fp16 or bf16"


def int8_block_rows(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MatMulNBits' B [N, K/block, block] (one level a byte), scales and zero points [N * K/block]
    for w [N, K]."""
    n, k = w.shape
    q, scale, zero = zero_range_levels(w.reshape(n, k // block, block), LEVELS_8BIT, axis=-1)
    return q.astype(np.uint8), scale.reshape(-1).astype(np.float32), zero.reshape(-1).astype(np.uint8)


class MatMulInt8Blocks(RewriteRule):
    name = "8-bit blocks"
    counts_as = "MatMulNBits"
    anchor = ("MatMul",)

    def __init__(self, block: int, accuracy_level: int, exclude: set[str], include: set[str]):
        self.block, self.accuracy_level = block, accuracy_level
        self.exclude, self.include = exclude, include
        self.made: dict[str, str] = {}  # weight -> its tensors' prefix: a shared weight is stored once

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        if node.name in self.exclude or (self.include and node.name not in self.include):
            return "excluded"
        weight = index.weight_2d(node.input[1])
        if weight is not None and weight.data_type in HALF_TYPES:
            return HALF_REASON
        return blocks_reason(index, node, self.block)

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        k, n = index.dims(node.input[1])
        name = f"{node.name or node.output[0]}_Q8"
        base = self.made.get(node.input[1])
        if base is None:
            base = self.made[node.input[1]] = name
            w = weight_store.array(index.inits[node.input[1]]).astype(np.float32, copy=False)
            levels, scales, zeros = int8_block_rows(np.ascontiguousarray(w.T), self.block)
            del w
            index.model.graph.initializer.extend(
                [
                    weight_store.tensor(levels, f"{base}_B"),
                    weight_store.tensor(scales, f"{base}_scales"),
                    weight_store.tensor(zeros, f"{base}_zero_points"),
                ]
            )
        inputs = [node.input[0], f"{base}_B", f"{base}_scales", f"{base}_zero_points"]
        attrs = {"K": k, "N": n, "bits": 8, "block_size": self.block, "accuracy_level": self.accuracy_level}
        matmul = helper.make_node(
            "MatMulNBits", inputs, list(node.output), name=name, domain=MS_DOMAIN, **attrs
        )
        edits.replace(node, [matmul])


class QuantizeWeights8Bit(FunctionalPass):
    """Float MatMul weights to 8-bit blocks (module docstring); `exclude` names MatMuls kept,
    `include`, when given, the only ones quantized. MatMuls whose depth is not a multiple of the
    block are skipped with that reason (onnxruntime's quantizer pads them: quantize_weights.py)."""

    def __init__(self, block_size: int = 32, accuracy_level: int = 4, exclude=(), include=()):
        self.block_size, self.accuracy_level = block_size, accuracy_level
        self.exclude, self.include = set(exclude), set(include)
        self.name = "quantize-int8-rtn"

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        declare_ms_domain(out)
        rule = MatMulInt8Blocks(self.block_size, self.accuracy_level, self.exclude, self.include)
        result = apply_rule(rule, out)
        drop_unused_initializers(out.graph)
        details = {"MatMulNBits": result.rewritten, "skipped": result.skipped}
        return PassResult(out, result.rewritten > 0, details)
