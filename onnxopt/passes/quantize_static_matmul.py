"""Static int8 MatMuls written straight into onnxruntime's CPU kernel, one weight at a time.

MatMul(X, W) with W a float initializer and X calibrated  =>  QuantizeLinear(X) (one per X, shared
by every MatMul reading it) -> MatMulIntegerToFloat(X_u8, W_s8, scales, zero points): what
quantize_static's QDQ form became after CpuInt8Layout, with the same numbers (onnxruntime's
compute_scale_zp for X; its symmetric per-column grid for W, vectorized here). onnxruntime's
quantize_static took the whole model as one protobuf and quantized per channel in a Python loop:
on the Qwen2.5-0.5B shape 37 of the static step's 133 s, at 5.6 GB (issue 28); it also wrapped
the graph's float outputs in Q/DQ, so a decoder's logits came out on a 256-level grid.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxopt.io import weight_store
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers
from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule, apply_rule, declare_ms_domain

# onnxruntime's symmetric int8 weight ranges: (-64, 64) with reduce_range (7 bits, for x86 without
# VNNI: quant_utils.ONNX_INT_TYPE_REDUCED_RANGE), else (-127, 127).
WEIGHT_RANGE = {True: 128.0, False: 254.0}


def activation_scale_zero(low: float, high: float, signed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's scale and zero point for an activation range (asymmetric 8 bits)."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(onnx.TensorProto.INT8 if signed else onnx.TensorProto.UINT8)
    zero, scale = compute_scale_zp(np.array(low, np.float32), np.array(high, np.float32), qmin, qmax)
    return np.asarray(scale, np.float32), np.asarray(zero)


def int8_columns(w: np.ndarray, reduce_range: bool, per_channel: bool = True):
    """Symmetric int8 levels of w [K, N], one scale per column (or one for all), zero points 0:
    onnxruntime's quantize_data on each column, without its loop."""
    w = w.astype(np.float32, copy=False)
    low = np.minimum(w.min(0) if per_channel else w.min(), 0).astype(np.float64)
    high = np.maximum(w.max(0) if per_channel else w.max(), 0).astype(np.float64)
    absmax = np.maximum(np.abs(low), np.abs(high))
    scale = (2 * absmax / WEIGHT_RANGE[reduce_range]).astype(np.float32)
    scale = np.where(scale < np.finfo(np.float32).tiny, np.float32(1.0), scale)
    levels = np.clip(np.round(w / scale), -128, 127).astype(np.int8)
    return levels, np.atleast_1d(scale) if per_channel else scale.reshape(()), np.zeros(scale.shape, np.int8)


class StaticInt8MatMul(RewriteRule):
    name = "static int8 MatMul"
    counts_as = "static_matmuls"
    anchor = ("MatMul",)

    def __init__(self, ranges: dict, exclude: set[str], reduce_range: bool, per_channel: bool, signed: bool):
        self.ranges = ranges  # tensor -> (low, high)
        self.exclude, self.reduce_range, self.per_channel = exclude, reduce_range, per_channel
        self.signed = signed  # int8 activations (else uint8)
        self.quantized: dict[str, tuple[str, str, str]] = {}  # X -> (X_u8, scale, zero point)
        self.weights: dict[str, tuple[str, str, str]] = {}  # W -> (W_s8, scales, zero points)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        if node.domain not in ("", "ai.onnx"):
            return f"domain {node.domain!r} is not ONNX's"
        if node.name in self.exclude:
            return "excluded"
        weight = index.weight_2d(node.input[1])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT:
            return "input 1 is not a 2-D float initializer"
        if node.input[0] in index.inits or node.input[0] not in self.ranges:
            return "input 0 is not a calibrated activation"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        added = []
        x = node.input[0]
        if x not in self.quantized:
            scale, zero = activation_scale_zero(*self.ranges[x], self.signed)
            # Names of its own: quantize_static, run after it on a Gemm, or quantize_dynamic on a
            # MatMul left dynamic, would otherwise take `{x}_scale` for theirs (a review found both).
            names = (f"{x}_int8_static", f"{x}_int8_static_scale", f"{x}_int8_static_zero_point")
            index.model.graph.initializer.extend(
                [onnx.numpy_helper.from_array(scale, names[1]), onnx.numpy_helper.from_array(zero, names[2])]
            )
            added.append(
                helper.make_node("QuantizeLinear", [x, *names[1:]], [names[0]], name=f"{x}_static_quantize")
            )
            self.quantized[x] = names
        w = node.input[1]
        if w not in self.weights:
            levels, scales, zeros = int8_columns(
                weight_store.array(index.inits[w]), self.reduce_range, self.per_channel
            )
            names = (f"{w}_s8_static", f"{w}_s8_static_scale", f"{w}_s8_static_zero_point")
            index.model.graph.initializer.extend(
                [
                    weight_store.tensor(levels, names[0]),
                    weight_store.tensor(scales, names[1]),
                    weight_store.tensor(zeros, names[2]),
                ]
            )
            self.weights[w] = names
        (xq, xs, xz), (wq, ws, wz) = self.quantized[x], self.weights[w]
        matmul = helper.make_node(
            "MatMulIntegerToFloat",
            [xq, wq, xs, ws, xz, wz],
            list(node.output),
            name=node.name,
            domain=MS_DOMAIN,
        )
        edits.replace(node, [*added, matmul])


class QuantizeStaticMatMuls(FunctionalPass):
    """Every calibrated float MatMul not in `exclude` into the CPU provider's static int8 kernel
    (module docstring); `ranges`: tensor -> (low, high) from calibration."""

    name = "quantize-static-matmuls"

    def __init__(self, ranges: dict, exclude=(), reduce_range=False, per_channel=True, signed=False):
        self.ranges, self.exclude = ranges, set(exclude)
        self.reduce_range, self.per_channel, self.signed = reduce_range, per_channel, signed

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        rule = StaticInt8MatMul(self.ranges, self.exclude, self.reduce_range, self.per_channel, self.signed)
        result = apply_rule(rule, out)
        if result.rewritten:
            declare_ms_domain(out)
        drop_unused_initializers(out.graph)
        details = {"static_matmuls": result.rewritten, "skipped": result.skipped}
        return PassResult(out, result.rewritten > 0, details)
