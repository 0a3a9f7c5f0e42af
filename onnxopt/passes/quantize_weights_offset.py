"""4-bit weights with a float offset per block, in onnxruntime's fast MatMulNBits kernel.

Each block of `block` input channels of one output column is stored as w = s * (q - z) + r: q in
0..15, s a float scale, z an integer zero point, r the float remainder (GGUF's Q4_1 grid is a
scale and a float minimum per block). MatMulNBits' zero point is an integer nibble: it can only
shift a block's grid by whole steps; its float zero points take the CPU kernel's slow path
(measured 0.03x: 780-910 us against 25-34 us for a 576 x 1536 matrix at batch 1). The remainders'
part of the product, sum over blocks of r * (sum of the block's inputs), rides in the same
MatMulNBits: its input is [x, block sums of x] (x times a 0/1 indicator, then Concat), and R is
32 more input channels of the weight, itself in 4 bits (|r| <= half a step, so its own rounding
is ~1/30 of a step).

Why: a model that was 4-bit in Q4_1 already (every linear weight of the bundled SmolLM2's GGUF)
lies on such a grid, and min-max blocks find it again; onnxruntime's RTN puts 0 inside every
block's range and rounds the zero point, moving each block by up to half a step. SmolLM2, STS-B
dev text, 2026-12-02, AMD EPYC: +0.6% perplexity against RTN's +13.7%; integer zero points alone
(the remainders dropped) +21.3%, dropped on o_proj/down_proj only +7.4%, on the others +12.7%:
every matrix needs them. Cost: the block sums are 2 small ops per distinct input (4 per layer),
decode 12% slower than RTN in a 24-generation interleaved run (MatMul 7 us and Concat 5 us a call;
MatMulNBits itself +6%). Padding the sums to whole blocks matters: K + 18 channels ran 11% slower
than K + 32. Gaussian weights: output error 0.067 against RTN's 0.084 (tests/quantize/test_int4_offset.py).

`integer_zero` (--algo asym) drops the remainders: each block is s * (q - z) with z a whole level,
searched the same way (graph_queries/block_search.py: search_integer_zero), and MatMulNBits reads
x itself. Off-grid SmolLM2 (benchmarks/offgrid.py, sigma 0.2), 2026-12-07, AMD EPYC AVX2:
perplexity on STS-B dev text (tuning) 36.76 fp32, offset 38.08 (+3.6%), asym 38.25 (+4.0%); on
held-out STS-B train text 56.61, 58.20 (+2.8%), 60.11 (+6.2%); 136.0 -> 131.8 MB;
decode in onnxruntime-genai 1.11x offset's (12.20 against 13.59 ms a token, 1 thread, batch 1;
1.15x at batch 32 with 2 threads; 402 nodes against 1,374: no block sums). On weights already on
a Q4_1 grid the remainders are what makes int4 exact, so offset stays the default.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.graph_queries.block_search import search_blocks, search_integer_zero
from onnxopt.graph_queries.weight_grids import LEVELS, MIDDLE, fit_blocks, zero_range_levels
from onnxopt.io import weight_store
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers
from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule, apply_rule, declare_ms_domain

INDICATOR_PREFIX = "block_indicator_"  # the 0/1 matrices that sum the inputs' blocks
PARTIAL_BLOCKS = "not a multiple of the block"  # the skip onnxruntime's RTN takes over (it pads)


def blocks_reason(index: RewriteIndex, node: onnx.NodeProto, block: int) -> str | None:
    """Why `node`'s weight cannot be cut into blocks of `block` input channels, or None."""
    weight = index.weight_2d(node.input[1])
    if weight is None or weight.data_type != onnx.TensorProto.FLOAT:
        return "its weight is not a 2-D float initializer"
    if weight.dims[0] % block:
        return f"its {weight.dims[0]} input channels are {PARTIAL_BLOCKS} {block}"
    return None


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """[N, blocks, block] levels -> MatMulNBits' B: two per byte, the even channel in the low nibble."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def pack_zero_points(zero: np.ndarray) -> np.ndarray:
    """[N, blocks] nibbles -> MatMulNBits' zero points: each column's blocks two per byte."""
    if zero.shape[1] % 2:
        zero = np.concatenate([zero, np.full((zero.shape[0], 1), MIDDLE, zero.dtype)], 1)
    return (zero[:, 0::2] | (zero[:, 1::2] << 4)).astype(np.uint8).reshape(-1)


def offset_rows(w: np.ndarray, block: int, importance=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B [N, blocks, block / 2], scales and zero points of MatMulNBits over K + K/block input
    channels for w [N, K]: the K weights with integer zero points, then the offsets they leave
    (|r| <= half a step), as extra channels read against the inputs' block sums. With `importance`
    (E[x^2] per input channel) each block's grid is searched (graph_queries/block_search.py)."""
    q, scale, offset = fit_blocks(w, block) if importance is None else search_blocks(w, block, importance)
    zero = np.clip(np.round(MIDDLE - offset / scale), 0, LEVELS)
    rest = offset - scale * (MIDDLE - zero)  # w = scale * (q - zero) + rest
    n, blocks = rest.shape
    padded = np.zeros((n, -(-blocks // block) * block), np.float32)
    padded[:, :blocks] = rest
    r_q, r_scale, r_zero = zero_range_levels(padded.reshape(n, -1, block), LEVELS, axis=-1)
    levels = np.concatenate([q, r_q.astype(np.uint8)], 1)
    scales = np.concatenate([scale, r_scale[..., 0].astype(np.float32)], 1)
    zeros = np.concatenate([zero, r_zero[..., 0]], 1).astype(np.uint8)
    return pack_nibbles(levels), scales.reshape(-1), pack_zero_points(zeros)


def integer_zero_rows(
    w: np.ndarray, block: int, importance=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B, scales and zero points of MatMulNBits over K input channels for w [N, K]: whole-level
    zero points, the grid searched with `importance` (E[x^2] per input channel), or min-max with 0
    inside each block (onnxruntime's RTN grid) without it."""
    n, k = w.shape
    if importance is None:
        q, scale, zero = zero_range_levels(
            w.reshape(n, k // block, block).astype(np.float32), LEVELS, axis=-1
        )
        q, scale, zero = q.astype(np.uint8), scale[..., 0].astype(np.float32), zero[..., 0].astype(np.uint8)
    else:
        q, scale, zero = search_integer_zero(w, block, importance)
    return pack_nibbles(q), scale.reshape(-1), pack_zero_points(zero)


def sum_width(k: int, block: int) -> int:
    """Channels the block sums take: K/block, padded with zero columns to whole blocks, so the
    MatMulNBits' K stays a multiple of its block."""
    return -(-(k // block) // block) * block


class MatMulOffsetInt4(RewriteRule):
    name = "int4 offset"
    counts_as = "MatMulNBits"
    anchor = ("MatMul",)

    def __init__(
        self, block: int, accuracy_level: int, exclude: tuple[str, ...], importance=None, integer_zero=False
    ):
        self.block, self.accuracy_level, self.exclude = block, accuracy_level, set(exclude)
        self.importance = importance or {}  # input -> E[x^2] per channel: the searched grid
        self.integer_zero = integer_zero  # whole-level zero points, no remainders (module doc)
        self.with_sums: dict[str, str] = {}  # input -> [input, its block sums], shared by its MatMuls
        self.on_rewrite = None  # called after each MatMul: progress over a large model

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        return "excluded" if node.name in self.exclude else blocks_reason(index, node, self.block)

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        x, out, name = node.input[0], node.output[0], node.name or node.output[0]
        w = weight_store.array(index.inits[node.input[1]]).astype(np.float32)
        if self.on_rewrite is not None:
            self.on_rewrite()
        k, n = w.shape
        base = f"{name}_int4"
        if self.integer_zero:
            packed, scales, zeros = integer_zero_rows(w.T, self.block, self.importance.get(x))
        else:
            packed, scales, zeros = offset_rows(w.T, self.block, self.importance.get(x))
        index.model.graph.initializer.extend(
            [
                weight_store.tensor(packed, f"{base}_B"),
                weight_store.tensor(scales, f"{base}_scales"),
                weight_store.tensor(zeros, f"{base}_zero_points"),
            ]
        )
        nodes = [] if self.integer_zero else self._with_block_sums(index, x, k)
        attrs = {"bits": 4, "block_size": self.block, "accuracy_level": self.accuracy_level}
        reads = x if self.integer_zero else self.with_sums[x]
        inputs = [reads, f"{base}_B", f"{base}_scales", f"{base}_zero_points"]
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                inputs,
                [out],
                name=base,
                domain=MS_DOMAIN,
                K=k if self.integer_zero else k + sum_width(k, self.block),
                N=n,
                **attrs,
            )
        )
        edits.replace(node, nodes)

    def _with_block_sums(self, index: RewriteIndex, x: str, k: int) -> list[onnx.NodeProto]:
        """[x, block sums of x] once per input, shared by the MatMuls reading it."""
        if x in self.with_sums:
            return []
        safe = x.replace("/", "_").strip("_")
        indicator = f"{INDICATOR_PREFIX}{k}x{self.block}"  # one per width: read from cache, not memory
        if indicator not in index.inits:
            blocks = np.zeros((k, sum_width(k, self.block)), np.float32)
            blocks[np.arange(k), np.arange(k) // self.block] = 1.0
            index.inits[indicator] = numpy_helper.from_array(blocks, indicator)
            index.model.graph.initializer.append(index.inits[indicator])
        self.with_sums[x] = f"{safe}_with_block_sums"
        return [
            helper.make_node("MatMul", [x, indicator], [f"{safe}_block_sums"], name=f"{safe}_block_sum"),
            helper.make_node(
                "Concat",
                [x, f"{safe}_block_sums"],
                [self.with_sums[x]],
                name=f"{safe}_with_block_sums",
                axis=-1,
            ),
        ]


class QuantizeWeightsOffset(FunctionalPass):
    """Float MatMul weights to 4-bit blocks with a float offset each (module docstring).

    `importance`, when given, is a function (model, input tensor names) -> {name: E[x^2] per input
    channel} from calibration activations; each block's grid is then searched by the weighted error
    instead of min-max (graph_queries/block_search.py). It reads the pass's input model, unchanged."""

    def __init__(
        self,
        block_size: int = 32,
        accuracy_level: int = 4,
        exclude: tuple[str, ...] = (),
        importance=None,
        on_progress=None,
        integer_zero: bool = False,
    ):
        self.block_size, self.accuracy_level, self.exclude = block_size, accuracy_level, exclude
        self.integer_zero = integer_zero
        self.importance = importance
        self.on_progress = on_progress  # (MatMuls done, MatMuls to quantize)
        self.name = "quantize-int4-asym" if integer_zero else "quantize-int4-offset"

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        declare_ms_domain(out)
        rule = MatMulOffsetInt4(
            self.block_size, self.accuracy_level, self.exclude, integer_zero=self.integer_zero
        )
        if self.importance is not None:
            index = RewriteIndex(original)
            inputs = {
                n.input[0] for n in original.graph.node if n.op_type == "MatMul" and not rule.check(index, n)
            }
            rule.importance = self.importance(original, sorted(inputs))
        if self.on_progress is not None:
            index = RewriteIndex(out)
            total = sum(1 for n in out.graph.node if n.op_type == "MatMul" and not rule.check(index, n))
            done = iter(range(1, total + 1))
            rule.on_rewrite = lambda: self.on_progress(next(done, total), total)
        result = apply_rule(rule, out)
        drop_unused_initializers(out.graph)
        details = {"MatMulNBits": result.rewritten, "skipped": result.skipped}
        if self.importance is not None:
            details["searched"] = len(rule.importance)
        return PassResult(out, result.rewritten > 0, details)
