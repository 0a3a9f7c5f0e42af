"""Projections that read the same activation become one MatMul: q/k/v of an attention layer,
gate/up of a gated FFN. Decoding runs every weight-only int4 MatMul at one row per token, where a
kernel call costs about as much to start as to run; one wide call instead of three (or two) does
the same multiplies. GroupQueryAttention then takes the packed q|k|v directly (its packed-QKV
form: query only, key and value empty); elsewhere a Split gives back the original outputs.

Blocks run along the input channels, so packing along the output channels changes no quantized
value: the int4 model computes exactly what the unpacked one does.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.io import weight_store
from onnxopt.io.model_files import main_opset
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers
from onnxopt.passes.rewrite import MS_DOMAIN, Edits, RewriteIndex, RewriteRule, apply_rule


def _float_weight(index: RewriteIndex, node: onnx.NodeProto) -> onnx.TensorProto | None:
    weight = index.weight_2d(node.input[1]) if len(node.input) == 2 else None
    return weight if weight is not None and weight.data_type == onnx.TensorProto.FLOAT else None


class PackSharedInputMatMuls(RewriteRule):
    name = "pack projections"
    counts_as = "packed"
    anchor = ("MatMul",)

    def __init__(self, exclude: tuple[str, ...] = ()):
        self.exclude = set(exclude)

    def _siblings(self, index: RewriteIndex, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """The MatMuls reading node's input with float weights of the same depth, in graph order."""
        depth = index.dims(node.input[1])[0]
        return [
            user
            for user in index.consumers.get(node.input[0], [])
            if user.op_type == "MatMul"
            and user.input[0] == node.input[0]
            and user.name not in self.exclude
            and _float_weight(index, user) is not None
            and index.dims(user.input[1])[0] == depth
            and user.output[0] not in index.outputs
        ]

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        if node.name in self.exclude:
            return "excluded"
        if _float_weight(index, node) is None:
            return "its weight is not a 2-D float initializer"
        siblings = self._siblings(index, node)
        if len(siblings) < 2:
            return "no other projection reads its input"
        if siblings[0] is not node:
            return f"packed with {siblings[0].name or siblings[0].output[0]}"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        siblings = self._siblings(index, node)
        weights = [weight_store.array(index.inits[s.input[1]]) for s in siblings]
        name = f"{node.name or node.output[0]}_packed"
        index.model.graph.initializer.append(weight_store.tensor(np.concatenate(weights, 1), f"{name}_W"))
        widths = numpy_helper.from_array(np.array([w.shape[1] for w in weights], np.int64), f"{name}_widths")
        index.model.graph.initializer.append(widths)
        packed = helper.make_node("MatMul", [node.input[0], f"{name}_W"], [name], name=name)
        split = helper.make_node(
            "Split", [name, widths.name], [s.output[0] for s in siblings], name=f"{name}_split", axis=-1
        )
        edits.replace(node, [packed, split])
        edits.remove(*siblings[1:])


class PackedQkvIntoGqa(RewriteRule):
    name = "packed q|k|v into GroupQueryAttention"
    counts_as = "packed_qkv"
    anchor = ("GroupQueryAttention",)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        if node.domain != MS_DOMAIN or len(node.input) < 3 or not node.input[1] or not node.input[2]:
            return "not a GroupQueryAttention with separate q, k, v"
        split = index.made_by(node.input[0], "Split")
        axis = next((a.i for a in split.attribute if a.name == "axis"), 0) if split is not None else 0
        if split is None or list(split.output) != list(node.input[:3]) or axis != -1:
            return "q, k and v are not the three outputs of one packed projection"
        if index.made_by(split.input[0], "MatMul") is None:
            return "the split tensor is not a projection's output"
        if any(index.only_consumer(name) is not node for name in split.output):
            return "q, k or v is read by another node"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        split = index.made_by(node.input[0], "Split")
        node.input[0], node.input[1], node.input[2] = split.input[0], "", ""
        edits.remove(split)


class PackProjections(FunctionalPass):
    """Functional. details: `packed` (MatMul groups made one), `packed_qkv` (attention layers
    reading the packed q|k|v), `skipped` (reasons, by GroupQueryAttention node)."""

    name = "pack-projections"

    def __init__(self, exclude: tuple[str, ...] = ()):
        self.exclude = exclude

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        if main_opset(out) < 13:
            reason = {"graph": "opset below 13 (Split sizes input)"}
            return PassResult(out, False, {"packed": 0, "packed_qkv": 0, "skipped": reason})
        packed = apply_rule(PackSharedInputMatMuls(self.exclude), out)
        qkv = apply_rule(PackedQkvIntoGqa(), out)
        drop_unused_initializers(out.graph)
        details = {"packed": packed.rewritten, "packed_qkv": qkv.rewritten, "skipped": qkv.skipped}
        return PassResult(out, packed.rewritten > 0, details)
