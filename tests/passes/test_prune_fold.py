"""FoldPruned: slicing kept units (fold) computes what zeroing the others (mask) does, on a copy."""

import numpy as np
import onnx

from onnxopt.passes.graph_index import Graph
from onnxopt.passes.prune_fold import FfnPlan, FoldPruned, HeadPlan, head_channels
from onnxopt.passes.prune_structures import find_attention_blocks, find_ffn_blocks
from tests.passes.util import feed_for, graph, inits, nodes, run, unchanged_by

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
