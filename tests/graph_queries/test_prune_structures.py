"""Prunable structures found by graph shape: FFN blocks on graphs/ffn (gated: swiglu, packed:
glu_packed), attention blocks on tiny BERT, GPT-2's packed QKV, Llama's grouped-query attention
with its cache, Phi-3's packed qkv_proj, and the notes that say why a block keeps its heads."""

import numpy as np
import onnx
import pytest

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures import (
    AttentionBlock,
    FfnBlock,
    Linear,
    find_attention_blocks,
    find_ffn_blocks,
    head_channels,
    query_channels,
)
from onnxopt.graph_queries.prune_structures.blocks import ShapeConst
from tests.passes.util import graph, node
from tests.prune.test_prune_decoders import exported_decoder


def _model(folder):
    return onnx.load(str(folder / "model.onnx"))


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


def test_gpt2_packed_qkv_is_three_sections_of_c_attn(tiny_gpt2_onnx):
    """GPT-2 packs Q, K and V in one projection split in three: each section is found, with the
    constants that cut it (the Conv1D reshape to 96 columns, the Split sizes)."""
    blocks, notes = find_attention_blocks(Graph(_model(tiny_gpt2_onnx)))
    assert notes == [] and len(blocks) == 2
    first = blocks[0]
    assert first.q == first.k == first.v and first.q.node == "/transformer/h.0/attn/c_attn/Gemm"
    assert (first.heads, first.kv_heads, first.head_dim, first.offsets) == (2, 0, 16, (0, 32, 64))
    assert first.out.node == "/transformer/h.0/attn/c_proj/Gemm"
    assert [(s.reshape.rsplit("/", 1)[-1], s.index, s.value) for s in first.shapes] == [
        ("Reshape_1", 2, 96),
        ("Split", 0, 32),
        ("Split", 1, 32),
        ("Split", 2, 32),
    ]
    assert len(find_ffn_blocks(Graph(_model(tiny_gpt2_onnx)))) == 2


def test_swiglu_is_one_block_of_two_projections():
    (block,) = find_ffn_blocks(Graph(graph("swiglu")))
    assert (block.up.node, block.gate.node, block.down.node, block.width) == ("up", "gate", "down", 8)
    assert block.up_offsets == [0] and block.hidden_input == "h"


def test_a_gated_projection_read_elsewhere_is_not_an_ffn():
    model = graph("swiglu")
    model.graph.node.append(onnx.helper.make_node("Identity", ["u"], ["u2"], name="elsewhere"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("u2", 1, None))
    assert find_ffn_blocks(Graph(model)) == []  # slicing up's columns would change u2


def test_a_packed_gate_up_counts_each_neuron_twice():
    (block,) = find_ffn_blocks(Graph(graph("glu_packed")))
    assert (block.up.node, block.gate, block.width, block.up_offsets) == ("gate_up", None, 8, [0, 8])
    assert block.shapes == [ShapeConst("chunk", 0, 8), ShapeConst("chunk", 1, 8)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return exported_decoder(tmp_path_factory, "llama")


def test_grouped_query_attention_is_found_with_its_cache(llama):
    g = Graph(_model(llama))
    blocks, notes = find_attention_blocks(g)
    assert notes == [] and len(blocks) == 2
    for i, block in enumerate(blocks):
        prefix = f"/model/layers.{i}/self_attn"
        assert [p.node for p in (block.q, block.k, block.v, block.out)] == [
            f"{prefix}/{name}/MatMul" for name in ("q_proj", "k_proj", "v_proj", "o_proj")
        ]
        assert (block.heads, block.kv_heads, block.groups, block.group_size, block.head_dim) == (
            4,
            2,
            2,
            2,
            8,
        )
        assert sorted(block.cache) == sorted(
            f"{kind}.{i}.{kv}" for kind in ("past_key_values", "present") for kv in ("key", "value")
        )
        assert block.shapes == []  # head counts are -1 or read from the tensors: nothing to rewrite
    ffn = find_ffn_blocks(g)
    assert [(b.up.node.split("/")[-2], b.gate.node.split("/")[-2]) for b in ffn] == [
        ("up_proj", "gate_proj")
    ] * 2


def test_an_unknown_kv_repeat_keeps_the_heads(llama):
    """Query head h reads K/V head h // group only when repeat_kv unsqueezes at axis 2; anything
    else would pair heads wrongly, so the block is left whole and the note says why."""
    model = _model(llama)
    g = Graph(model)
    for expand in [n for n in model.graph.node if n.op_type == "Expand" and "self_attn" in n.name]:
        unsqueeze = g.producer[expand.input[0]]
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1]), f"{unsqueeze.name}/axes1"))
        unsqueeze.input[1] = f"{unsqueeze.name}/axes1"
    blocks, notes = find_attention_blocks(Graph(model))
    assert blocks == [] and len(notes) == 2
    assert notes[0] == (
        "/model/layers.0/self_attn/Softmax: query heads share K/V heads in a layout onnxopt does not "
        "know (no repeat_kv Expand); its heads are kept"
    )


def test_phi3_packed_qkv_and_gate_up_are_sections(tmp_path_factory):
    g = Graph(_model(exported_decoder(tmp_path_factory, "phi3")))
    blocks, notes = find_attention_blocks(g)
    assert notes == [] and len(blocks) == 2
    first = blocks[0]
    assert first.q == first.k == first.v and first.q.node.endswith("qkv_proj/MatMul")
    assert (first.heads, first.kv_heads, first.offsets) == (4, 2, (0, 32, 48))
    # Slice bounds: Q ends at 32, K is 32..48, V starts at 48 (and runs to the end).
    assert [(s.reshape.rsplit("/", 1)[-1], s.input, s.value) for s in first.shapes] == [
        ("Slice", 2, 32),
        ("Slice_1", 1, 32),
        ("Slice_1", 2, 48),
        ("Slice_2", 1, 48),
    ]
    ffn = find_ffn_blocks(g)
    assert [(b.up.node.split("/")[-2], b.width, b.up_offsets, b.shapes) for b in ffn] == [
        ("gate_up_proj", 64, [0, 64], [])  # torch's chunk computes its bounds from the width
    ] * 2


def test_a_unit_owns_the_channels_of_the_query_heads_that_read_its_kv_head():
    lin = Linear("p", "w", None)
    block = AttentionBlock(0, lin, lin, lin, lin, heads=4, head_dim=2, context="c", kv_heads=2)
    assert head_channels([1, 3], 2).tolist() == [2, 3, 6, 7]
    assert query_channels(block, [1]).tolist() == [4, 5, 6, 7]  # K/V head 1: query heads 2 and 3
    block.kv_heads = 0  # one K/V head per query head, as in BERT
    assert query_channels(block, [1]).tolist() == [2, 3]
