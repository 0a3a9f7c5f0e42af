"""Lay a quantized graph out for onnxruntime's CPU int8 kernels.

`quantize_static` writes portable QDQ: DequantizeLinear pairs around every MatMul, which the CPU
provider fuses at load time only where its patterns match. On a fused BERT graph they mostly did
not, and profiling all-MiniLM-L6-v2 (seq 128, 2 threads) showed where the time went:
- Q/DQ pairs on MatMul *outputs* made onnxruntime requantize to uint8 (QLinearMatMul) and
  dequantize again before the next fp32 op: two passes over the tensor and one more rounding;
- the residual branch read the fake-quantized LayerNorm output, so it paid a DequantizeLinear and
  carried int8 rounding into the skip connection;
- the contrib SkipLayerNormalization and BiasGelu kernels ran 2.5x and 1.8x slower than
  LayerNormalization plus an add, and Gelu alone (measured on [32, 128, 384] / [32, 128, 1536]).

So this pass applies five rewrite rules, one per file, in this order (each a local pattern with
its own check; see onnxopt/passes/rewrite.py):
1. static_matmul: DQ(x_u8) -> MatMul <- DQ(W_s8)  into  MatMulIntegerToFloat;
2. dynamic_matmul: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul  into
   DynamicQuantizeMatMul;
3. float_qdq: a Q -> DQ pair whose consumers are all fp32 ops is removed: they read the original
   tensor. Before 4, since a Q left on a MatMul output would be a second reader stopping the fold;
4. bias_fold: the bias of the op that consumes such a MatMul (SkipLayerNormalization's,
   BiasGelu's, a 1-D Add) moves into the int8 op, which adds it while scaling its accumulators.
   It reads SkipLayerNormalization's bias input, so it runs before 5 takes that op apart;
5. skip_layernorm: SkipLayerNormalization becomes Sum + LayerNormalization (opset 17 and up).
Whatever does not match is left as it was, with the reason in `details["skipped"]`.
"""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.int8_ops import int8_op_counts, op_histogram
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.cpu_int8_layout.bias_fold import BiasFold
from onnxopt.passes.cpu_int8_layout.dynamic_matmul import DynamicMatMul
from onnxopt.passes.cpu_int8_layout.float_qdq import FloatQdq
from onnxopt.passes.cpu_int8_layout.skip_layernorm import SkipLayerNorm
from onnxopt.passes.cpu_int8_layout.static_matmul import StaticMatMul
from onnxopt.passes.graph_edits import keep_ancestors
from onnxopt.passes.rewrite import MS_DOMAIN, RewriteRule, apply_rule, declare_ms_domain

RULES: tuple[RewriteRule, ...] = (StaticMatMul(), DynamicMatMul(), FloatQdq(), BiasFold(), SkipLayerNorm())
LAYOUT = "onnxruntime-cpu"  # the value of details["layout"], recorded in the manifest


class CpuInt8Layout(FunctionalPass):
    """details: `layout`, `rewrites` (count per rule, those above 0), `skipped` ({candidate node:
    reason}) and `int8_ops` (the laid-out graph's int8 op counts)."""

    name = "cpu-int8-layout"

    def __init__(self, rules: tuple[RewriteRule, ...] = RULES):
        self.rules = rules

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        g = out.graph
        changes, skipped = {}, {}
        for rule in self.rules:
            result = apply_rule(rule, out)
            changes[rule.counts_as] = result.rewritten
            skipped.update(result.skipped)
        keep_ancestors(g, [o.name for o in g.output])  # nodes and weights the rewrites left unread
        del g.value_info[:]  # shapes of rewritten tensors; onnxruntime infers them again
        if any(n.domain == MS_DOMAIN for n in g.node):
            declare_ms_domain(out)
        modified = any(changes.values()) or op_histogram(original) != op_histogram(out)
        details = {
            "layout": LAYOUT,
            "rewrites": {k: v for k, v in changes.items() if v},
            "skipped": skipped,
            "int8_ops": int8_op_counts(out),
        }
        return PassResult(out, modified, details)


__all__ = ["RULES", "BiasFold", "CpuInt8Layout", "DynamicMatMul", "FloatQdq", "SkipLayerNorm", "StaticMatMul"]
