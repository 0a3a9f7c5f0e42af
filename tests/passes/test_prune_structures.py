"""Prunable structures found by graph shape: FFN blocks on graphs/ffn, attention blocks on tiny BERT,
and the note that says why packed QKV (GPT-2) keeps its heads."""

import onnx

from onnxopt.passes.graph_index import Graph
from onnxopt.passes.prune_structures import (
    AttentionBlock,
    FfnBlock,
    Linear,
    find_attention_blocks,
    find_ffn_blocks,
)
from tests.passes.util import graph, node


def test_the_ffn_is_found_through_an_erf_gelu():
    assert find_ffn_blocks(Graph(graph("ffn"))) == [
        FfnBlock(
            layer=0,
            up=Linear("up", "w_up", "b_up", "up_bias"),
            down=Linear("down", "w_down", "b_down", "down_bias"),
            width=8,
            hidden_input="a",
            shapes=[],
        )
    ]
    assert find_attention_blocks(Graph(graph("ffn"))) == ([], [])


def test_an_op_between_the_projections_that_is_not_elementwise_stops_the_match():
    model = graph("ffn")
    node(model, "gelu_erf").op_type = "Softmax"
    assert find_ffn_blocks(Graph(model)) == []
    model = graph("ffn")
    node(model, "gelu_half").input[1] = "b_up"  # a vector, not a scalar: not elementwise per neuron
    assert find_ffn_blocks(Graph(model)) == []


def test_bert_attention_blocks_carry_their_projections_and_head_shapes(tiny_bert_onnx):
    model = onnx.load(str(tiny_bert_onnx / "model.onnx"))
    blocks, notes = find_attention_blocks(Graph(model))
    assert notes == [] and len(blocks) == 2
    first = blocks[0]
    assert isinstance(first, AttentionBlock) and (first.layer, first.heads, first.head_dim) == (0, 2, 16)
    prefix = "/encoder/layer.0/attention"
    assert [p.node for p in (first.q, first.k, first.v, first.out)] == [
        f"{prefix}/self/query/MatMul",
        f"{prefix}/self/key/MatMul",
        f"{prefix}/self/value/MatMul",
        f"{prefix}/output/dense/MatMul",
    ]
    assert first.out.bias_node == f"{prefix}/output/dense/Add"
    assert [(s.reshape.rsplit("/", 1)[-1], s.value) for s in first.shapes] == [
        ("Reshape", 2),
        ("Reshape_1", 2),
        ("Reshape_2", 2),
        ("Reshape_3", 32),
    ]
    assert len(find_ffn_blocks(Graph(model))) == 2


def test_gpt2_attention_is_reported_and_its_heads_kept(tiny_gpt2_onnx):
    """GPT-2 packs Q, K and V in one projection, split later: no separate projections to slice."""
    model = onnx.load(str(tiny_gpt2_onnx / "model.onnx"))
    blocks, notes = find_attention_blocks(Graph(model))
    assert blocks == []
    assert notes == [
        f"/transformer/h.{i}/attn/Softmax: scores or context MatMul not found; its heads are kept"
        for i in range(2)
    ]
    assert len(find_ffn_blocks(Graph(model))) == 2  # its FFN is still pruned
