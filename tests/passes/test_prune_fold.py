"""FoldPruned: slicing kept units (fold) computes what zeroing the others (mask) does, on a copy:
plain, gated and packed FFNs, BERT heads, grouped-query attention with its cache, packed QKV."""

import numpy as np
import onnx
import pytest

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures import (
    find_attention_blocks,
    find_ffn_blocks,
    head_channels,
    query_channels,
)
from onnxopt.io.cache_layout import cache_layout
from onnxopt.passes.prune_fold import FfnPlan, FoldPruned, HeadPlan
from onnxopt.runtime.generation import Decoder
from tests.passes.util import feed_for, graph, inits, nodes, run, unchanged_by
from tests.prune.test_prune_decoders import exported_decoder

KEEP = np.array([0, 3, 5])


def _ffn_plan(model):
    (block,) = find_ffn_blocks(Graph(model))
    t = inits(model)
    return FfnPlan(block, KEEP, t["w_down"][KEEP], t["b_down"])


def test_folding_slices_the_ffn_and_drops_the_old_weights():
    model = graph("ffn")
    result = unchanged_by(FoldPruned([_ffn_plan(model)], []), model)
    assert result.modified and result.details == {"mask_only": False} and FoldPruned.in_place is False
    assert nodes(result.model)[0] == ("up", "MatMul", ["x", "up/weight_pruned"], ["u"])
    assert nodes(result.model)[1] == ("up_bias", "Add", ["u", "up_bias/bias_pruned"], ["h"])
    assert nodes(result.model)[7] == ("down", "MatMul", ["a", "down/weight_pruned"], ["d"])
    shapes = {t.name: list(t.dims) for t in result.model.graph.initializer}
    assert shapes["up/weight_pruned"] == [4, 3] and shapes["down/weight_pruned"] == [3, 4]
    assert not {"w_up", "b_up", "w_down", "b_down"} & set(shapes)  # unread now, so gone
    np.testing.assert_array_equal(inits(result.model)["up/weight_pruned"], inits(model)["w_up"][:, KEEP])


def test_masking_keeps_the_shapes_and_computes_the_same():
    model = graph("ffn")
    folded = FoldPruned([_ffn_plan(model)], [])(model).model
    masked = unchanged_by(FoldPruned([_ffn_plan(model)], [], mask_only=True), model)
    assert masked.details == {"mask_only": True} and FoldPruned([], [], mask_only=True).name == "prune-mask"
    assert [list(t.dims) for t in masked.model.graph.initializer if t.name == "up/weight_pruned"] == [[4, 8]]
    feed = feed_for(model)
    np.testing.assert_allclose(run(folded, feed)[0], run(masked.model, feed)[0], rtol=1e-5, atol=1e-6)


def test_no_plan_changes_nothing_but_still_copies():
    model = graph("ffn")
    result = unchanged_by(FoldPruned([], []), model)
    assert not result.modified and result.model.SerializeToString() == model.SerializeToString()


def test_heads_fold_rewrites_the_reshape_constants_and_matches_masking(tiny_bert_onnx):
    model = onnx.load(str(tiny_bert_onnx / "model.onnx"))
    blocks, _ = find_attention_blocks(Graph(model))
    g = Graph(model)
    plans = []
    for block in blocks:  # keep head 1 of 2 in every layer
        channels = head_channels([1], block.head_dim)
        bias = g.const(block.out.bias)
        plans.append(HeadPlan(block, [1], g.const(block.out.weight)[channels], bias))
    folded = unchanged_by(FoldPruned([], plans), model).model
    masked = FoldPruned([], plans, mask_only=True)(model).model
    reshape = f"{blocks[0].q.node.rsplit('/', 2)[0]}/Reshape"
    shape = next(n for n in folded.graph.node if n.name == reshape).input[1]
    concat = next(n for n in folded.graph.node if shape in n.output)  # (batch, seq, heads, head_dim)
    pieces = {i: inits(folded)[i].tolist() for i in concat.input if i.endswith("_pruned")}
    assert pieces == {f"{concat.name}/piece2_pruned": [1]}  # 2 heads -> 1
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(5, 60, (2, 7)), "attention_mask": np.ones((2, 7), np.int64)}
    feed |= {"token_type_ids": np.zeros((2, 7), np.int64)}
    names = {i.name for i in model.graph.input}
    feed = {k: v for k, v in feed.items() if k in names}
    np.testing.assert_allclose(run(folded, feed)[0], run(masked, feed)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["swiglu", "glu_packed"])
def test_gated_and_packed_ffns_fold_as_they_mask(name):
    model = graph(name)
    (block,) = find_ffn_blocks(Graph(model))
    plan = FfnPlan(block, KEEP, inits(model)["w_down"][KEEP], None)
    folded = unchanged_by(FoldPruned([plan], []), model).model
    masked = FoldPruned([plan], [], mask_only=True)(model).model
    shapes = {t.name: list(t.dims) for t in folded.graph.initializer}
    if name == "swiglu":  # neuron j is column j of gate and of up
        assert shapes["gate/weight_pruned"] == shapes["up/weight_pruned"] == [4, 3]
        np.testing.assert_array_equal(inits(folded)["gate/weight_pruned"], inits(model)["w_gate"][:, KEEP])
    else:  # columns j and 8 + j of the packed projection, and the Split sizes follow
        packed = inits(model)["w_gate_up"]
        np.testing.assert_array_equal(inits(folded)["gate_up/weight_pruned"], packed[:, [*KEEP, *(KEEP + 8)]])
        split = next(n for n in folded.graph.node if n.name == "chunk")
        assert inits(folded)[split.input[1]].tolist() == [3, 3]
    assert shapes["down/weight_pruned"] == [3, 4]
    feed = feed_for(model)
    np.testing.assert_allclose(run(folded, feed)[0], run(masked, feed)[0], rtol=1e-5, atol=1e-6)


def _keep_second_unit(model):
    """A plan that keeps unit 1 (a K/V head and its query heads) of every attention block."""
    g = Graph(model)
    blocks, notes = find_attention_blocks(g)
    assert notes == []
    return [HeadPlan(b, [1], g.const(b.out.weight)[query_channels(b, [1])], None) for b in blocks]


def _prefill_then_step(model, ids):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    decoder = Decoder(session, cache_layout(model))
    whole, _ = decoder.step(ids, decoder.empty_past(len(ids)), 0)
    _, past = decoder.step(ids[:, :-1], decoder.empty_past(len(ids)), 0)
    return whole, decoder.step(ids[:, -1:], past, ids.shape[1] - 1)[0], past


@pytest.mark.parametrize("kind", ["llama", "phi3"])
def test_grouped_query_heads_fold_with_the_cache_dims(kind, tmp_path_factory):
    """Unit 1 of 2 is K/V head 1 and query heads 2 and 3: Q keeps 16 of 32 columns, K and V 8 of 16
    (Phi-3: the three sections of qkv_proj, its Slice bounds moved), the output projection 16 rows;
    the cache inputs and outputs say 1 head; fold and mask agree, through the cache too."""
    model = onnx.load(str(exported_decoder(tmp_path_factory, kind) / "model.onnx"))
    plans = _keep_second_unit(model)
    assert query_channels(plans[0].block, [1]).tolist() == list(range(16, 32))
    folded = unchanged_by(FoldPruned([], plans), model).model
    masked = FoldPruned([], plans, mask_only=True)(model).model
    shapes = {
        n.name: list(t.dims) for n in folded.graph.node for t in folded.graph.initializer if t.name in n.input
    }
    prefix = "/model/layers.0/self_attn"
    if kind == "llama":
        assert shapes[f"{prefix}/q_proj/MatMul"] == [32, 16] and shapes[f"{prefix}/k_proj/MatMul"] == [32, 8]
        assert shapes[f"{prefix}/v_proj/MatMul"] == [32, 8]
    else:
        assert shapes[f"{prefix}/qkv_proj/MatMul"] == [32, 32]
        g = Graph(folded)
        bounds = {
            n.name.rsplit("/", 1)[-1]: [g.const(i).tolist() for i in n.input[1:3]]
            for n in folded.graph.node
            if n.op_type == "Slice" and n.input[0] == f"{prefix}/qkv_proj/MatMul_output_0"
        }
        assert bounds == {"Slice": [[0], [16]], "Slice_1": [[16], [24]], "Slice_2": [[24], [2**63 - 1]]}
    assert shapes[f"{prefix}/o_proj/MatMul"] == [16, 32]
    layout = cache_layout(folded)
    assert set(layout.heads.values()) == {1} and set(cache_layout(masked).heads.values()) == {2}
    assert all(
        o.type.tensor_type.shape.dim[1].dim_value == 1 for o in folded.graph.output if "present" in o.name
    )
    ids = np.random.default_rng(1).integers(3, 70, (2, 7))
    whole, stepped, past = _prefill_then_step(folded, ids)
    assert {v.shape[1] for v in past.values()} == {1}
    np.testing.assert_allclose(stepped, whole, atol=1e-4)
    np.testing.assert_allclose(_prefill_then_step(masked, ids)[0], whole, atol=1e-4)
