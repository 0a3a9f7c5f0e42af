"""Rule float_qdq: a Q -> DQ pair read only by fp32 ops goes; its readers take the original tensor."""

from onnxopt.passes.cpu_int8_layout import FloatQdq, StaticMatMul
from onnxopt.passes.rewrite import apply_rule
from tests.passes.util import graph, node, nodes


def test_the_pair_on_a_matmul_output_goes_and_its_reader_takes_the_float_tensor():
    model = graph("qdq_matmul")
    apply_rule(StaticMatMul(), model)
    result = apply_rule(FloatQdq(), model)
    assert result.rewritten == 1
    assert result.skipped == {
        "dq_x": "float Q/DQ: read by MatMul, which onnxruntime fuses with it",
        "dq_w": "float Q/DQ: its input is not a QuantizeLinear output",
    }
    # dq_h went, and q_h with it (its only reader went); bias reads the MatMul output again.
    assert [n.name for n in model.graph.node] == ["q_x", "dq_x", "dq_w", "dense", "bias", "act", "fp32_dense"]
    assert list(node(model, "bias").input) == ["h", "b"]


def test_a_pair_read_by_an_op_that_fuses_with_it_stays():
    model = graph("qdq_matmul")  # before the static rewrite, dense (a MatMul) reads dq_x and dq_w
    result = apply_rule(FloatQdq(), model)
    assert result.skipped["dq_x"] == "float Q/DQ: read by MatMul, which onnxruntime fuses with it"
    assert result.rewritten == 1
    assert nodes(model)[:4] == [
        ("q_x", "QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
        ("dq_x", "DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        ("dq_w", "DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"]),
        ("dense", "MatMul", ["x_dq", "w"], ["h"]),
    ]


def test_a_pair_with_another_scale_or_a_graph_output_stays():
    model = graph("qdq_matmul")
    node(model, "dq_h").input[1] = "x_scale"
    assert apply_rule(FloatQdq(), model).skipped["dq_h"] == (
        "float Q/DQ: the QuantizeLinear has another scale or zero point"
    )
    model = graph("qdq_matmul")
    model.graph.output[0].name = "h_dq"
    node(model, "act").output[0] = "unused"
    assert apply_rule(FloatQdq(), model).skipped["dq_h"] == "float Q/DQ: its output is a graph output"


def test_a_quantize_read_by_a_pair_that_stays_is_kept():
    model = graph("qdq_matmul")
    node(model, "fp32_dense").input[0] = "h_q"  # a second reader of q_h, not a DequantizeLinear
    apply_rule(FloatQdq(), model)
    names = [n.name for n in model.graph.node]
    assert "q_h" in names and "dq_h" not in names
