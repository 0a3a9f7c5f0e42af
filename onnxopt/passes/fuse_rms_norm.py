"""RMSNorm as onnxruntime's fused kernels: SimplifiedLayerNormalization, and
SkipSimplifiedLayerNormalization where the norm reads a residual Add (the ORT GenAI builder's
layout).

The exporters write a Llama-family RMSNorm as eight nodes: [Cast] Pow(x, 2), ReduceMean over the
last axis, Add(eps), Sqrt, Div(1, .), Mul(x, .), [Cast], Mul(gamma, .). onnxruntime fuses them
into SimplifiedLayerNormalization itself when a session starts, but not the residual Add before
them, and OpenVINO and other readers of the file see all eight. Why: SmolLM2 int4, a decode
step's kernels (onnxruntime profile, 40 steps, 2 threads, 2026-12-07, AMD EPYC AVX2): the 60
residual Adds took 3% of the step and the 61 norms 4%, in 121 kernels where the builder's model
runs 61. The Add's sum stays an output of the fused node (input_skip_bias_sum), for the next
layer's residual. Measured alone (the same int4 model with and without this pass, `onnxopt bench
--generate --runtime genai --threads 1 --batch 1 --runs 8`): 13.31 against 13.50 ms a token,
1.01x, within noise; kept since it costs nothing and the file then holds the kernels onnxruntime
runs rather than eight nodes per norm for every other reader.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxopt.graph_queries.graph_index import attributes
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers
from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule, apply_rule, declare_ms_domain

NORM = "SimplifiedLayerNormalization"  # onnxruntime's, registered in the ONNX domain
SKIP_NORM = "SkipSimplifiedLayerNormalization"  # com.microsoft


def _skip_cast(index: RewriteIndex, tensor: str) -> str:
    """The tensor a Cast reads, where `tensor` is made by one; else `tensor`."""
    cast = index.made_by(tensor, "Cast")
    return cast.input[0] if cast is not None else tensor


def _scalar(index: RewriteIndex, name: str) -> float | None:
    value = index.const(name)
    return float(np.asarray(value).reshape(-1)[0]) if value is not None and np.size(value) == 1 else None


class RmsNormRule(RewriteRule):
    """Mul(gamma, [Cast](Mul(x, Div(1, Sqrt(Add(ReduceMean(Pow(x, 2)), eps)))))) -> one node."""

    name = "rms norm"
    counts_as = NORM
    anchor = ("Mul",)

    def __init__(self):
        self.matched: dict[int, tuple] = {}  # id(final Mul) -> (x, gamma, eps, nodes to drop)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        gamma = next((i for i in node.input if i in index.inits and len(index.inits[i].dims) == 1), None)
        if gamma is None:
            return "no 1-D weight"
        normed = node.input[1] if node.input[0] == gamma else node.input[0]
        cast_out = index.made_by(normed, "Cast")
        scaled = index.made_by(_skip_cast(index, normed), "Mul")
        if scaled is None:
            return "not a scaled product"
        chain = self._chain(index, scaled)
        if isinstance(chain, str):
            return chain
        x, eps, nodes = chain
        if cast_out is not None and attributes(cast_out).get("to") != index.inits[gamma].data_type:
            return "its output cast is not to the weight's type"
        if cast_out is None:  # no cast back: x keeps whatever cast made it the weight's type
            x = scaled.input[0] if index.made_by(scaled.input[1], "Div") else scaled.input[1]
        inner = [n for n in (scaled, *nodes, cast_out) if n is not None]
        if any(index.only_consumer(o) is None for n in inner for o in n.output):
            return "an intermediate is read elsewhere"
        cast_in = index.made_by(pow_input := nodes[-1].input[0], "Cast") if cast_out is not None else None
        if cast_in is not None and all(any(u is n for n in inner) for u in index.consumers[pow_input]):
            inner.append(cast_in)  # read by the norm alone (a residual branch would read it too)
        constants = [index.producer.get(i) for n in nodes for i in n.input]  # eps, axes, 2, 1
        inner += [
            c
            for c in constants
            if c is not None and c.op_type == "Constant" and index.only_consumer(c.output[0])
        ]
        self.matched[id(node)] = (x, gamma, eps, inner)
        return None

    @staticmethod
    def _chain(index: RewriteIndex, scaled: onnx.NodeProto):
        for k in (0, 1):
            div = index.made_by(scaled.input[1 - k], "Div")
            if div is None or _scalar(index, div.input[0]) != 1.0:
                continue
            sqrt = index.made_by(div.input[1], "Sqrt")
            add = index.made_by(sqrt.input[0], "Add") if sqrt is not None else None
            mean = index.made_by(add.input[0], "ReduceMean") if add is not None else None
            pow_ = index.made_by(mean.input[0], "Pow") if mean is not None else None
            if pow_ is None or _scalar(index, pow_.input[1]) != 2.0 or pow_.input[0] != scaled.input[k]:
                return "not x / sqrt(mean(x^2) + eps)"
            axes = index.const(mean.input[1]) if len(mean.input) > 1 else attributes(mean).get("axes")
            if axes is None or list(np.asarray(axes).reshape(-1)) != [-1]:
                return "its mean is not over the last axis alone"
            if attributes(mean).get("keepdims", 1) != 1 or _scalar(index, add.input[1]) is None:
                return "its mean drops the axis, or eps is not a constant"
            # x before its cast up: the output cast brings the result back to x's (the weight's) type
            return (
                _skip_cast(index, scaled.input[k]),
                _scalar(index, add.input[1]),
                [div, sqrt, add, mean, pow_],
            )
        return "not x times a reciprocal square root"

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        x, gamma, eps, inner = self.matched[id(node)]
        fused = helper.make_node(
            NORM, [x, gamma], [node.output[0]], name=f"{node.name or node.output[0]}_rms_norm",
            axis=-1, epsilon=eps, stash_type=1,
        )  # fmt: skip
        edits.replace(node, [fused])
        edits.remove(*inner)


class SkipRmsNormRule(RewriteRule):
    """Add(a, b) -> [Cast to its own type] -> SimplifiedLayerNormalization: one fused node that
    also gives the sum, for the residual branch."""

    name = "skip rms norm"
    counts_as = SKIP_NORM
    anchor = (NORM,)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        add = index.made_by(node.input[0], "Add")
        if add is None:
            return "its input is no Add"
        if any(index.const(i) is not None for i in add.input):
            return "the Add has a constant term (a bias, not a residual)"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        add = index.producer[node.input[0]]
        eps = attributes(node).get("epsilon", 1e-5)
        fused = helper.make_node(
            SKIP_NORM, [add.input[0], add.input[1], node.input[1]], [node.output[0], "", "", add.output[0]],
            name=f"{node.name}_skip", domain=MS_DOMAIN, epsilon=eps,
        )  # fmt: skip
        edits.replace(add, [fused])  # where the Add was: what reads the sum comes after it
        edits.remove(node)


class FuseRmsNorm(FunctionalPass):
    """RMSNorms into SimplifiedLayerNormalization, then residual Adds into the Skip variant."""

    name = "fuse-rms-norm"

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        norms = apply_rule(RmsNormRule(), out)
        skips = apply_rule(SkipRmsNormRule(), out) if norms.rewritten else None
        if skips is not None and skips.rewritten:
            declare_ms_domain(out)
        drop_unused_initializers(out.graph)
        details = {NORM: norms.rewritten, SKIP_NORM: skips.rewritten if skips else 0}
        return PassResult(out, norms.rewritten > 0, details)
