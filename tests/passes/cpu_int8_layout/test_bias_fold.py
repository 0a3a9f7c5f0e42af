"""Rule bias_fold: the bias of the op reading an int8 MatMul moves into the MatMul."""

import numpy as np
import pytest
from onnx import helper

from onnxopt.passes.cpu_int8_layout import BiasFold, DynamicMatMul, FloatQdq, StaticMatMul
from onnxopt.passes.rewrite import apply_rule
from tests.passes.util import feed_for, graph, node, nodes, run, set_init


def _static(reader: str = "Add"):
    """qdq_matmul after the rules that run before this one; `reader` is the op adding the bias."""
    model = graph("qdq_matmul")
    bias = node(model, "bias")
    if reader == "BiasGelu":
        bias.op_type, bias.domain = "BiasGelu", "com.microsoft"
    elif reader == "SkipLayerNormalization":
        set_init(model, "gamma", np.ones(3, np.float32))
        set_init(model, "beta", np.zeros(3, np.float32))
        bias.op_type, bias.domain = "SkipLayerNormalization", "com.microsoft"
        bias.input[:] = ["h_dq", "z", "gamma", "beta", "b"]
    apply_rule(StaticMatMul(), model)
    apply_rule(FloatQdq(), model)
    return model


def test_an_add_bias_moves_into_matmul_integer_to_float():
    model = _static()
    result = apply_rule(BiasFold(), model)
    assert (result.rewritten, result.skipped) == (1, {})
    assert nodes(model)[3:] == [
        ("dense", "MatMulIntegerToFloat", ["x_q", "w_q", "x_scale", "w_scale", "x_zp", "w_zp", "b"], ["h"]),
        ("act", "Relu", ["h"], ["y"]),
        ("fp32_dense", "MatMul", ["x_dq", "w_f"], ["z"]),
    ]


def test_biasgelu_becomes_gelu_and_skiplayernorm_loses_its_bias_input():
    model = _static("BiasGelu")
    assert apply_rule(BiasFold(), model).rewritten == 1
    assert (
        nodes(model)[4] == ("bias", "Gelu", ["h"], ["hb"]) and node(model, "bias").domain == "com.microsoft"
    )
    assert list(node(model, "dense").input)[-1] == "b"
    model = _static("SkipLayerNormalization")
    assert apply_rule(BiasFold(), model).rewritten == 1
    assert nodes(model)[4] == ("bias", "SkipLayerNormalization", ["h", "z", "gamma", "beta"], ["hb"])
    assert list(node(model, "dense").input)[-1] == "b"


def test_a_dynamic_matmul_gets_the_bias_after_empty_slots_and_computes_the_same():
    model = graph("dynamic_matmul")
    feed = feed_for(model)
    want = run(model, feed)
    apply_rule(DynamicMatMul(), model)
    assert apply_rule(BiasFold(), model).rewritten == 1
    assert nodes(model)[:2] == [
        ("up", "DynamicQuantizeMatMul", ["x", "w_q", "w_scale", "w_zp", "b"], ["u"]),
        ("act", "Relu", ["u"], ["y"]),
    ]
    for got, expected in zip(run(model, feed), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _two_readers(model):
    node(model, "fp32_dense").input[0] = "h"


def _wide_bias(model):
    set_init(model, "b", np.zeros(4, np.float32))


def _bias_output_is_graph_output(model):
    model.graph.output[0].name = "hb"
    node(model, "act").output[0] = "unused"


def _relu_reader(model):
    node(model, "bias").op_type = "Relu"
    del node(model, "bias").input[1:]


@pytest.mark.parametrize(
    "change, reason",
    [
        (_two_readers, "its output has several readers or is a graph output"),
        (_wide_bias, "its reader Add 'bias' adds no float vector of width 3"),
        (_bias_output_is_graph_output, "its reader Add 'bias' writes a graph output"),
        (_relu_reader, "its reader Relu 'bias' has no bias input to hand over"),
    ],
)
def test_a_candidate_without_a_bias_to_take_keeps_its_reason(change, reason):
    model = _static()
    change(model)
    before = nodes(model)
    result = apply_rule(BiasFold(), model)
    assert (result.rewritten, result.skipped) == (0, {"dense": f"bias fold: {reason}"})
    assert nodes(model) == before


def test_a_matmul_with_a_bias_already_is_left_alone():
    model = _static()
    apply_rule(BiasFold(), model)
    model.graph.node.append(helper.make_node("Add", ["h", "b"], ["h2"], name="again"))
    assert apply_rule(BiasFold(), model).skipped == {"dense": "bias fold: it has a bias already"}
