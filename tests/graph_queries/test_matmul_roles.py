"""MatMuls by their place in the graph: the LM head found by what it writes, the FFN down
projections by the GELU that feeds them."""

from onnx import TensorProto, helper

from onnxopt.graph_queries.matmul_roles import after_activation, lm_heads
from tests.passes.util import graph, node


def test_the_lm_head_is_the_matmul_that_writes_a_graph_output():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="body"),
        helper.make_node("MatMul", ["h", "w2"], ["logits"], name="head"),
    ]
    graph_ = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    assert lm_heads(helper.make_model(graph_)) == ("head",)


def test_after_activation_names_the_matmuls_a_gelu_feeds():
    model = graph("ffn")
    assert after_activation(model) == ()
    node(model, "gelu_half").op_type = "Gelu"
    assert after_activation(model) == ("down",)
