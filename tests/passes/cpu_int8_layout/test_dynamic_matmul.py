"""Rule dynamic_matmul: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul  =>  DynamicQuantizeMatMul."""

import numpy as np
import pytest

from onnxopt.passes.cpu_int8_layout import DynamicMatMul
from onnxopt.passes.rewrite import apply_rule
from tests.passes.util import feed_for, graph, node, nodes, run


def test_the_four_op_int8_matmul_becomes_one_node():
    model = graph("dynamic_matmul")
    result = apply_rule(DynamicMatMul(), model)
    assert result.rewritten == 1
    assert result.skipped == {
        "up_unscaled": "dynamic MatMul: the rescale is not by the activation scale times a weight scale"
    }
    # It takes the rescale Mul's place, named after the MatMulInteger; the scale Mul goes with it.
    assert nodes(model) == [
        ("up", "DynamicQuantizeMatMul", ["x", "w_q", "w_scale", "w_zp"], ["u"]),
        ("bias", "Add", ["u", "b"], ["ub"]),
        ("act", "Relu", ["ub"], ["y"]),
        ("dql_z", "DynamicQuantizeLinear", ["x"], ["z_q", "z_scale", "z_zp"]),
        ("up_unscaled", "MatMulInteger", ["z_q", "w_q", "z_zp", "w_zp"], ["acc2"]),
        ("cast2", "Cast", ["acc2"], ["acc2_f"]),
        ("rescale2", "Mul", ["acc2_f", "w_scale"], ["z"]),
    ]
    assert node(model, "up").domain == "com.microsoft"


def test_the_rewrite_computes_what_the_four_ops_did():
    model = graph("dynamic_matmul")
    feed = feed_for(model)
    want = run(graph("dynamic_matmul"), feed)
    apply_rule(DynamicMatMul(), model)
    for got, expected in zip(run(model, feed), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _cast_read_twice(model):
    node(model, "act").input[0] = "acc_f"


def _weight_computed(model):
    node(model, "up").input[1] = "x_q"


def _activation_read_twice(model):
    node(model, "act").input[0] = "x_q"


def _weight_scale_computed(model):
    node(model, "scales").input[1] = "x_scale"


def _mul_after_cast_missing(model):
    node(model, "rescale").op_type = "Div"


@pytest.mark.parametrize(
    "change, reason",
    [
        (_cast_read_twice, "the Cast is not read by one Mul alone"),
        (_weight_computed, "the weight is not an initializer"),
        (_activation_read_twice, "the quantized activation has other readers"),
        (_weight_scale_computed, "the weight scale is not an initializer"),
        (_mul_after_cast_missing, "the Cast is not read by one Mul alone"),
    ],
)
def test_a_candidate_that_does_not_match_is_left_with_its_reason(change, reason):
    model = graph("dynamic_matmul")
    change(model)
    before = nodes(model)
    result = apply_rule(DynamicMatMul(), model)
    assert result.rewritten == 0
    assert result.skipped["up"] == f"dynamic MatMul: {reason}"
    assert nodes(model) == before


def test_a_scale_mul_read_elsewhere_stays():
    model = graph("dynamic_matmul")
    node(model, "rescale2").input[1] = "s"  # a second reader of the scale product
    apply_rule(DynamicMatMul(), model)
    assert [n.name for n in model.graph.node][:2] == ["scales", "up"]
