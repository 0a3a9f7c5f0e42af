"""Shape and type inference that copes with contrib ops and optimum's dynamic axes.

onnxruntime's quantizer needs a type for every tensor it touches. After fusion, plain ONNX
inference cannot type contrib ops (Attention, SkipLayerNormalization), which is where
"Unable to find data type for weight_name" comes from; and quant_pre_process stops with
"Incomplete symbolic shape inference" on optimum exports. Symbolic inference with auto_merge
handles both; when it still fails we fall back to ONNX inference and record why.
"""

from __future__ import annotations

import onnx

from onnxopt.errors import first_line
from onnxopt.io.external_data import has_external, weights_as_inputs
from onnxopt.io.saving import is_large
from onnxopt.passes.base import Pass, PassResult, copy_model
from onnxopt.silence import quiet


class InferShapes(Pass):
    """details: `method` ("symbolic" or "onnx") and `typed` (value_info entries); after a fallback
    also `skipped` ({"symbolic": reason}) and, as before, `fallback_reason` (the same reason)."""

    name = "infer-shapes"
    in_place = False  # both inferences return a new model (symbolic copies its input first)
    changes_input = False

    def call(self, model: onnx.ModelProto) -> PassResult:
        if _weights_apart(model):
            return _typed_from_weightless(model, self._infer(weights_as_inputs(model)), copy_model(model))
        return self._infer(model)

    def call_owned(self, model: onnx.ModelProto) -> PassResult:
        if _weights_apart(model):
            return _typed_from_weightless(model, self._infer(weights_as_inputs(model)), model)
        return self.call(model)

    def _infer(self, model: onnx.ModelProto) -> PassResult:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        try:
            with quiet():
                inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
            if inferred is not None:
                return PassResult(inferred, True, {"method": "symbolic", "typed": _typed_count(inferred)})
            reason = "symbolic inference returned nothing"
        except Exception as exc:  # the tool raises bare Exceptions on unsupported graphs
            reason = f"symbolic inference failed: {first_line(exc, 200)}"
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        details = {"method": "onnx", "fallback_reason": reason, "skipped": {"symbolic": reason}}
        return PassResult(inferred, True, {**details, "typed": _typed_count(inferred)})


def _weights_apart(model: onnx.ModelProto) -> bool:
    """Inference runs without the weights: past 2 GB, or when they are on disk."""
    return is_large(model) or has_external(model)


def _typed_from_weightless(model, inferred: PassResult, out: onnx.ModelProto) -> PassResult:
    """Past 2 GB, or with weights on disk, inference runs on the graph with its weights as typed
    inputs (external_data.weights_as_inputs) and its types are copied into `out`: both inferences
    serialize or copy the whole model otherwise, and protobuf cannot serialize past 2 GB (a
    Llama-3.2-1B shape held 3 copies here, issue 28). The weights' inputs are not copied back."""
    typed = inferred.model.graph
    inputs = {i.name for i in model.graph.input}
    for field in ("value_info", "input", "output"):
        del getattr(out.graph, field)[:]
        getattr(out.graph, field).extend(
            v for v in getattr(typed, field) if field != "input" or v.name in inputs
        )
    return PassResult(
        out, True, {**inferred.details, "weights": "typed inputs (weights on disk or past 2 GB)"}
    )


def _typed_count(model: onnx.ModelProto) -> int:
    return len(model.graph.value_info)
