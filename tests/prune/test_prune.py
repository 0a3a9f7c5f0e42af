"""Structured pruning on tiny BERT and GPT-2 models: folding equals masking, shapes really shrink.
Decoders with grouped-query attention and gated FFNs: tests/prune/test_prune_decoders.py."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures import find_attention_blocks, find_ffn_blocks
from onnxopt.io import text_graphs
from onnxopt.io.cache_layout import cache_layout, empty_past
from onnxopt.prune.refit import target_of
from onnxopt.prune.workflow import prune
from onnxopt.quantize.workflow import quantize
from tests.conftest import assert_clean_error, build_tiny_bert, export_to
from tests.prune.test_prune_decoders import weight_shapes


@pytest.fixture(scope="module")
def bert4(tmp_path_factory):
    """4 heads of 16, FFN 256: room to prune heads and 16-wide neuron groups."""
    hf = build_tiny_bert(tmp_path_factory.mktemp("hf") / "bert4", hidden=64, heads=4, seed=5)
    return export_to(hf, tmp_path_factory.mktemp("onnx") / "bert4")


def _outputs(folder, batch=2, seq=9, vocab=60):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    layout = cache_layout(onnx.load(str(folder / "model.onnx")))
    feed = empty_past(layout, batch) if layout else {}  # a decoder with past: a prefill
    for i in session.get_inputs():
        if i.name in feed:
            continue
        if i.name == "input_ids":
            feed[i.name] = rng.integers(5, vocab, (batch, seq))
        elif i.name == "position_ids":
            feed[i.name] = np.broadcast_to(np.arange(seq), (batch, seq)).copy()
        elif i.name == "attention_mask":
            feed[i.name] = np.ones((batch, seq), np.int64)
        else:
            feed[i.name] = np.zeros((batch, seq), np.int64)
    return session.run(None, feed)[0]


def test_bert_folding_equals_masking_and_shrinks(bert4, tmp_path):
    folded = prune(bert4, tmp_path / "fold", sparsity=0.5, calib=24)
    prune(bert4, tmp_path / "mask", sparsity=0.5, calib=24, mask_only=True)
    for seq in (5, 17):  # several lengths: the rewritten reshapes hold no stale sizes
        np.testing.assert_allclose(
            _outputs(tmp_path / "fold", seq=seq), _outputs(tmp_path / "mask", seq=seq), atol=1e-4
        )
    kept = {(r.kind, r.layer): r.kept for r in folded.layers}
    assert all(1 <= kept[("attention", i)] < 4 for i in range(2)), kept
    assert all(kept[("ffn", i)] % 16 == 0 and 64 <= kept[("ffn", i)] < 256 for i in range(2)), kept
    shapes = weight_shapes(tmp_path / "fold")
    for i in range(2):
        heads = kept[("attention", i)]
        assert shapes[f"/encoder/layer.{i}/attention/self/query/MatMul"] == (64, 16 * heads)
        assert shapes[f"/encoder/layer.{i}/attention/output/dense/MatMul"] == (16 * heads, 64)
        assert shapes[f"/encoder/layer.{i}/output/dense/MatMul"] == (kept[("ffn", i)], 64)
    assert weight_shapes(tmp_path / "mask") == weight_shapes(bert4)
    sizes = [(f / "model.onnx").stat().st_size for f in (bert4, tmp_path / "mask", tmp_path / "fold")]
    assert sizes[2] < 0.8 * sizes[1] and sizes[1] <= 1.01 * sizes[0]  # no stale weights left behind
    before, after = folded.linear_params
    assert after < 0.7 * before
    step = json.loads((tmp_path / "fold" / "onnxopt.json").read_text())["steps"][-1]
    assert step["step"] == "prune" and step["layers"][0]["kept"] == folded.layers[0].kept


def test_sparsity_zero_is_the_identity(bert4, tmp_path):
    prune(bert4, tmp_path / "same", sparsity=0.0, calib=4)
    np.testing.assert_allclose(_outputs(tmp_path / "same"), _outputs(bert4), atol=1e-6)
    assert weight_shapes(tmp_path / "same") == weight_shapes(bert4)


def test_gpt2_packed_attention_and_ffn_are_folded(tiny_gpt2_onnx, tmp_path):
    """GPT-2 packs Q, K and V in one projection (c_attn) split in three: each section loses the
    same heads' columns, and the Split sizes follow."""
    folded = prune(tiny_gpt2_onnx, tmp_path / "fold", sparsity=0.5, calib=24)
    prune(tiny_gpt2_onnx, tmp_path / "mask", sparsity=0.5, calib=24, mask_only=True)
    vocab = 70
    for seq in (4, 11):
        np.testing.assert_allclose(
            _outputs(tmp_path / "fold", seq=seq, vocab=vocab),
            _outputs(tmp_path / "mask", seq=seq, vocab=vocab),
            atol=1e-4,
        )
    assert sorted((r.layer, r.kind) for r in folded.layers) == [
        (0, "attention"),
        (0, "ffn"),
        (1, "attention"),
        (1, "ffn"),
    ]
    assert all(r.kept < r.units for r in folded.layers)
    assert not any("heads are kept" in note for note in folded.notes)
    kept = {(r.kind, r.layer): r.kept for r in folded.layers}
    shapes = weight_shapes(tmp_path / "fold")
    assert shapes["/transformer/h.0/mlp/c_proj/Gemm"][0] == kept[("ffn", 0)]
    assert shapes["/transformer/h.0/attn/c_attn/Gemm"] == (32, 3 * 16 * kept[("attention", 0)])
    assert shapes["/transformer/h.0/attn/c_proj/Gemm"] == (16 * kept[("attention", 0)], 32)


def test_pruned_model_still_fuses_and_quantizes(bert4, tmp_path):
    result = prune(bert4, tmp_path / "p", sparsity=0.5, calib=16)
    quantize(tmp_path / "p", tmp_path / "q", mode="dynamic")
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    attention = [n for n in model.graph.node if n.op_type == "QAttention"]
    assert len(attention) == 2
    heads = [next(a.i for a in n.attribute if a.name == "num_heads") for n in attention]
    assert heads == [r.kept for r in result.layers if r.kind == "attention"]
    assert _outputs(tmp_path / "q").shape == _outputs(bert4).shape


def test_prune_refuses_an_int4_model(cli, tiny_gpt2_int4, tmp_path):
    code, _o, err = cli("prune", tiny_gpt2_int4, "-o", tmp_path / "x", "--sparsity", "0.25")
    assert_clean_error(code, err, "is quantized", "prune the fp32 export")


def test_prune_errors(cli, bert4, tiny_bert_dynamic, tmp_path):
    for bad in ("1", "-0.1", "nan"):
        code, _o, err = cli("prune", bert4, "-o", tmp_path / "x", "--sparsity", bad)
        assert_clean_error(code, err, "--sparsity must be a number in [0, 1)")
    code, _o, err = cli("prune", bert4, "-o", tmp_path / "x", "--sparsity", "0.5", "--no-heads", "--no-ffn")
    assert_clean_error(code, err, "nothing to prune")
    code, _o, err = cli("prune", bert4, "-o", tmp_path / "x", "--sparsity", "0.5", "--per-layer-floor", "0")
    assert_clean_error(code, err, "--per-layer-floor")
    code, _o, err = cli("prune", tiny_bert_dynamic, "-o", tmp_path / "x", "--sparsity", "0.5")
    assert_clean_error(code, err, "is quantized")
    fused = tmp_path / "fused"
    code, _o, err = cli("optimize", bert4, "-o", fused)
    assert code == 0, err
    code, _o, err = cli("prune", fused, "-o", tmp_path / "x", "--sparsity", "0.5")
    assert_clean_error(code, err, "already fused", "unfused export")
    code, _o, err = cli("prune", tmp_path / "missing", "-o", tmp_path / "x", "--sparsity", "0.5")
    assert_clean_error(code, err, "does not exist")
    assert not (tmp_path / "x").exists()
    shutil.rmtree(fused)


def test_prune_cli_reports_per_layer(cli, bert4, tmp_path):
    code, out, err = cli("prune", bert4, "-o", tmp_path / "p", "--sparsity", "0.5", "--calib", "8")
    assert code == 0, err
    assert "heads" in out and "neurons" in out and "all" in out


def test_refit_target_is_the_sum_with_the_skip_connection(bert4):
    """Each block is re-fitted to reproduce its output plus the skip connection, so the re-fit
    also undoes the residual drift of the layers pruned below it."""
    graph = Graph(onnx.load(str(bert4 / "model.onnx")))
    attention, _ = find_attention_blocks(graph)
    projections = [b.down for b in find_ffn_blocks(graph)] + [b.out for b in attention]
    assert len(projections) == 4
    for proj in projections:
        target, residual = target_of(graph, proj)
        add = graph.producer[target]
        assert add.op_type == "Add" and residual in add.input and graph.const(residual) is None
        assert [n.op_type for n in graph.consumers[target]] == ["LayerNormalization"]


def test_refit_target_without_a_skip_connection_is_the_projection_output():
    model = text_graphs.load("mlp")
    for k, node in enumerate(model.graph.node):
        node.name = f"n{k}"
    graph = Graph(model)
    (block,) = find_ffn_blocks(graph)
    assert target_of(graph, block.down) == ("y", None)
