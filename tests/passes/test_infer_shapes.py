"""InferShapes: symbolic inference, ONNX inference as the fallback with its reason; never in place."""

from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

from onnxopt.passes.infer_shapes import InferShapes
from tests.passes.util import graph, unchanged_by


def _typed(model):
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in model.graph.value_info
    }


def test_symbolic_inference_types_the_intermediate_tensors_on_a_copy():
    result = unchanged_by(InferShapes(), graph("mlp"))
    assert result.details == {"method": "symbolic", "typed": 5}
    assert _typed(result.model) == {
        "h": ["N", 8],
        "hb": ["N", 8],
        "a": ["N", 8],
        "o": ["N", 2],
        "y": ["N", 2],
    }


def test_when_symbolic_inference_fails_onnx_inference_takes_over_and_the_reason_is_kept(monkeypatch):
    def fail(*_args, **_kwargs):
        raise Exception("Incomplete symbolic shape inference\nsecond line")

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(fail))
    result = unchanged_by(InferShapes(), graph("mlp"))
    reason = "symbolic inference failed: Incomplete symbolic shape inference"
    assert result.details == {
        "method": "onnx",
        "fallback_reason": reason,
        "skipped": {"symbolic": reason},
        "typed": 4,
    }
    assert _typed(result.model)["o"] == ["N", 2]


def test_symbolic_inference_returning_nothing_is_a_reason_too(monkeypatch):
    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(lambda *_a, **_k: None))
    result = InferShapes()(graph("linear"))
    assert result.details["skipped"] == {"symbolic": "symbolic inference returned nothing"}
