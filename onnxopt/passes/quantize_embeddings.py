"""Word-embedding tables to int8, one scale per row, in plain ONNX ops every runtime reads.

Gather(table, ids) becomes Gather(table_int8, ids) -> Cast -> Mul(Gather(row_scales, ids)): the
lookup reads int8 rows and scales only the rows it took, so the table is 4x smaller on disk and in
memory and no step dequantizes it whole. onnxruntime's int8 paths reach an embedding only through
BERT's EmbedLayerNormalization fusion; every other architecture (ModernBERT, DeBERTa-v2, decoders)
kept its table in fp32, most of a small model's size (SmolLM2's 49,152 x 576 table is 113 MB of
its 539). Symmetric per-row scales: a row is one token's vector, and rows differ in norm.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.io import weight_store
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers
from onnxopt.passes.rewrite import Edits, RewriteIndex, RewriteRule, apply_rule

ROW_SCALE_SUFFIX = "_row_scale"  # each int8 table's per-row scales: `<table>_int8` rows times these
MIN_ROWS = 64  # token-type tables (2 rows) are too small to matter; vocabularies and positions are not


class EmbeddingInt8(RewriteRule):
    name = "embedding int8"
    counts_as = "embeddings_int8"
    anchor = ("Gather",)

    def check(self, index: RewriteIndex, node: onnx.NodeProto) -> str | None:
        table = index.inits.get(node.input[0])
        if table is None:
            return "its table is not an initializer"
        if table.data_type != onnx.TensorProto.FLOAT or len(table.dims) != 2:
            return "its table is not a 2-D float matrix"
        if table.dims[0] < MIN_ROWS:
            return f"a small table ({table.dims[0]} rows)"
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            return "it gathers along another axis than the rows"
        readers = index.consumers.get(node.input[0], [])
        if len(readers) > 1 or node.input[0] in index.outputs:
            other = next((r.op_type for r in readers if r is not node), "a graph output")
            return f"its table is shared with {other}"
        return None

    def rewrite(self, index: RewriteIndex, node: onnx.NodeProto, edits: Edits) -> None:
        table = weight_store.array(index.inits[node.input[0]]).astype(np.float32)
        scale = np.maximum(np.abs(table).max(axis=1, keepdims=True) / 127.0, 1e-12).astype(np.float32)
        quantized = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
        base, ids, out = node.input[0], node.input[1], node.output[0]
        scales = base + ROW_SCALE_SUFFIX
        graph = index.model.graph
        graph.initializer.extend(
            [
                weight_store.tensor(quantized, f"{base}_int8"),
                numpy_helper.from_array(scale, scales),
            ]
        )
        name = node.name or out
        edits.replace(
            node,
            [
                helper.make_node(
                    "Gather", [f"{base}_int8", ids], [f"{out}_int8"], name=f"{name}_int8", axis=0
                ),
                helper.make_node("Cast", [f"{out}_int8"], [f"{out}_cast"], name=f"{name}_cast", to=1),
                helper.make_node("Gather", [scales, ids], [f"{out}_scale"], name=f"{name}_scale", axis=0),
                helper.make_node("Mul", [f"{out}_cast", f"{out}_scale"], [out], name=f"{name}_dequantize"),
            ],
        )


class QuantizeEmbeddings(FunctionalPass):
    """Every word-embedding Gather on an fp32 table of its own goes int8 with per-row scales."""

    name = "quantize-embeddings"

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        rule = EmbeddingInt8()
        result = apply_rule(rule, out)
        if result.rewritten:
            drop_unused_initializers(out.graph)  # the fp32 tables just replaced
        details = {rule.counts_as: result.rewritten, "skipped": result.skipped}
        return PassResult(out, result.rewritten > 0, details)
