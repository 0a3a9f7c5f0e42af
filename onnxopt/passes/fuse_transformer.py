"""Transformer fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm) by onnxruntime.transformers.

The fused ops are what onnxruntime's fast CPU kernels, and its int8 kernels (QAttention), run on.
"""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.int8_ops import op_histogram
from onnxopt.passes.base import InPlacePass, PassResult
from onnxopt.silence import quiet

# Hugging Face model_type -> onnxruntime.transformers fusion family.
_FUSION_FAMILY = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "distilbert": "bert",
    "camembert": "bert",
    "electra": "bert",
    "mpnet": "bert",
    "gpt2": "gpt2",
}
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "LayerNormalization",
)


class FuseTransformer(InPlacePass):
    """In place: the fusion tool rewrites the ModelProto it is handed, so a functional pass would
    have to copy the whole model first, and for a model past 2 GB that second copy is what this
    path avoids (`_hold_embedding_tables` shrinks its tables so the tool's own copies stay small).

    details: `family` and `fused` (count per fused op type) when it ran; `skipped` ({"graph":
    reason}) when it did not."""

    name = "fuse"

    def __init__(self, model_type: str | None):
        self.model_type = model_type

    def call(self, model: onnx.ModelProto) -> PassResult:
        family = _FUSION_FAMILY.get((self.model_type or "").lower())
        if family is None:
            reason = f"no fusion rules for model type {self.model_type!r}"
            return PassResult(model, False, {"skipped": {"graph": reason}})
        if any(n.op_type in ("Attention", "MultiHeadAttention") for n in model.graph.node):
            return PassResult(model, False, {"skipped": {"graph": "graph is already fused"}})
        from onnxruntime.transformers.optimizer import optimize_model

        before = op_histogram(model)
        held = _hold_embedding_tables(model)
        try:
            with quiet():
                # num_heads/hidden_size 0: read them from the graph's Reshape constants, per layer.
                optimized = optimize_model(model, model_type=family, num_heads=0, hidden_size=0, opt_level=0)
            if optimized.model is not model:  # at opt_level 0 it fuses the proto it is given; if
                model.CopyFrom(optimized.model)  # that changes, the copy is cheap: tables are held
        finally:
            _restore(model, held)
        _import_used_domains(model)
        after = op_histogram(model)
        fusions = {op: after.get(op, 0) for op in FUSED_OPS if after.get(op, 0) > before.get(op, 0)}
        return PassResult(model, bool(fusions), {"family": family, "fused": fusions})


_HOLD_BYTES = 256 * 2**20


def _hold_embedding_tables(model: onnx.ModelProto) -> dict[str, tuple[bytes, list[int]]]:
    """Shrink large Gather tables (word embeddings) to their first row while the fusions run: they
    read only the tables' row width, but copy the model several times, which for a 2 GB vocabulary
    ran this 24 GB machine out of memory. Returned by name, put back by `_restore`."""
    tables = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input}
    held = {}
    for tensor in model.graph.initializer:
        data = tensor.raw_data if tensor.HasField("raw_data") else b""
        if tensor.name in tables and len(tensor.dims) >= 2 and len(data) >= _HOLD_BYTES:
            held[tensor.name] = (data, list(tensor.dims))
            tensor.raw_data = data[: len(data) // tensor.dims[0]]
            tensor.dims[0] = 1
    return held


def _restore(model: onnx.ModelProto, held: dict[str, tuple[bytes, list[int]]]) -> None:
    for tensor in model.graph.initializer:
        if tensor.name in held and tensor.dims and tensor.dims[0] == 1:
            data, dims = held[tensor.name]
            tensor.raw_data = data
            tensor.dims[0] = dims[0]


def _import_used_domains(model: onnx.ModelProto) -> None:
    """The fusion tool adds com.microsoft nodes but declares the domain only when saving to a file."""
    imported = {o.domain for o in model.opset_import}
    for domain in sorted({n.domain for n in model.graph.node} - imported - {"", "ai.onnx"}):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
