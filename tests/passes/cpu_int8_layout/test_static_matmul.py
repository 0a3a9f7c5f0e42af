"""Rule static_matmul: DQ(x) -> MatMul <- DQ(W)  =>  MatMulIntegerToFloat, or why not."""

import numpy as np
import pytest
from onnx import helper

from onnxopt.passes.cpu_int8_layout import StaticMatMul
from onnxopt.passes.rewrite import apply_rule
from tests.passes.util import feed_for, graph, node, nodes, run, set_init


def test_the_qdq_matmul_becomes_matmul_integer_to_float():
    model = graph("qdq_matmul")
    before = nodes(model)
    result = apply_rule(StaticMatMul(), model)
    assert result.rewritten == 1
    assert result.skipped == {"fp32_dense": "static MatMul: input 1 is not a DequantizeLinear output"}
    want = before.copy()
    want[3] = ("dense", "MatMulIntegerToFloat", ["x_q", "w_q", "x_scale", "w_scale", "x_zp", "w_zp"], ["h"])
    assert nodes(model) == want
    assert node(model, "dense").domain == "com.microsoft"


def test_the_rewrite_computes_what_the_qdq_matmul_did():
    model = graph("qdq_matmul")
    feed = feed_for(model)
    want = run(graph("qdq_matmul"), feed)
    apply_rule(StaticMatMul(), model)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for got, expected in zip(run(model, feed), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _weight_uint8(model):
    set_init(model, "w_q", np.zeros((4, 3), np.uint8))
    set_init(model, "w_zp", np.zeros(3, np.uint8))


def _scale_per_row(model):
    set_init(model, "w_scale", np.full(4, 0.01, np.float32))


def _activation_per_channel(model):
    set_init(model, "x_scale", np.full(4, 0.02, np.float32))


def _activation_constant(model):
    set_init(model, "x_const", np.zeros((2, 4), np.uint8))
    node(model, "dq_x").input[0] = "x_const"


def _weight_3d(model):
    set_init(model, "w_q", np.zeros((1, 4, 3), np.int8))


def _other_domain(model):
    node(model, "dense").domain = "example.custom"


@pytest.mark.parametrize(
    "change, reason",
    [
        (_weight_uint8, "the weight is not int8"),
        (_scale_per_row, "the weight scale is neither per tensor nor per output column"),
        (_activation_per_channel, "the activation scale is not one constant"),
        (_activation_constant, "input 0 dequantizes an initializer, not an activation"),
        (_weight_3d, "the weight is 3-D, not 2-D"),
        (_other_domain, "domain 'example.custom' is not ONNX's"),
    ],
)
def test_a_candidate_that_does_not_match_is_left_with_its_reason(change, reason):
    model = graph("qdq_matmul")
    change(model)
    before = nodes(model)
    result = apply_rule(StaticMatMul(), model)
    assert result.rewritten == 0
    assert result.skipped["dense"] == f"static MatMul: {reason}"
    assert nodes(model) == before


def test_a_per_tensor_weight_scale_matches():
    model = graph("qdq_matmul")
    set_init(model, "w_scale", np.float32(0.01))
    set_init(model, "w_zp", np.int8(0))
    assert apply_rule(StaticMatMul(), model).rewritten == 1
    assert node(model, "dense").op_type == "MatMulIntegerToFloat"
