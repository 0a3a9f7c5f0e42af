"""Blocks whose weights another layer reads are kept whole, with a note; shared linears counted."""

from onnx import helper

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures import find_ffn_blocks
from onnxopt.graph_queries.shared_weights import shared_linears, without_shared_weights
from tests.passes.util import graph


def test_an_ffn_that_owns_its_weights_is_kept_for_pruning():
    g = Graph(graph("ffn"))
    blocks = find_ffn_blocks(g)
    assert without_shared_weights(g, blocks) == (blocks, []) and shared_linears(g) == 0


def test_a_weight_read_by_another_layer_through_identity_keeps_the_block_whole():
    model = graph("ffn")
    # ALBERT-style: a second layer reads the up weight through an Identity, as exporters share it.
    model.graph.node.extend(
        [
            helper.make_node("Identity", ["w_up"], ["w_up_shared"], name="share"),
            helper.make_node("MatMul", ["x", "w_up_shared"], ["u2"], name="layer2_up"),
        ]
    )
    model.graph.output.append(helper.make_tensor_value_info("u2", 1, None))
    g = Graph(model)
    blocks = find_ffn_blocks(g)
    assert without_shared_weights(g, blocks) == (
        [],
        ["up: FFN weights are shared with another layer; kept whole"],
    )
    assert shared_linears(g) == 2  # both readers: the Identity is followed back to w_up
