"""The re-fits' probes start from the values cached at the last folded block's boundary
(prune/stream.py), not from the model's inputs: the pruned model must be the one probing from the
inputs gives, and the later probes must really be fed from the cache."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxopt.graph_queries.cut_points import frontier, same_nodes_below, static_tensors
from onnxopt.io import text_graphs
from onnxopt.prune import stream as stream_module
from onnxopt.prune.stream import RefitStream
from onnxopt.prune.workflow import prune
from tests.conftest import build_tiny_bert, export_to
from tests.prune.test_prune_decoders import exported_decoder


def _weights(folder) -> dict[str, np.ndarray]:
    model = onnx.load(str(folder / "model.onnx"))
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def _both_ways(src, tmp_path, monkeypatch, **options):
    """Prune `src` with the cached stream and again probing every re-fit from the inputs; the
    cut each probe was fed, per probe, in the first run."""
    fed = []

    class Recorded(stream_module.PrefillProbe):
        def __init__(self, model, tensors, cut=None):
            super().__init__(model, tensors, cut)
            fed.append(self.inputs & set(cut or ()))

    with monkeypatch.context() as m:
        m.setattr(stream_module, "PrefillProbe", Recorded)
        cached = prune(src, tmp_path / "cached", **options)
    monkeypatch.setattr(RefitStream, "folded", lambda self, before, after, boundary: None)
    from_inputs = prune(src, tmp_path / "inputs", **options)
    assert cached.parameters == from_inputs.parameters
    one, other = _weights(tmp_path / "cached"), _weights(tmp_path / "inputs")
    assert one.keys() == other.keys()
    for name, value in one.items():
        np.testing.assert_allclose(value, other[name], rtol=2e-3, atol=2e-5, err_msg=name)
    return fed


@pytest.mark.parametrize("kind", ["llama", "phi3", "gpt2"])
def test_decoder_refits_from_the_cache_equal_refits_from_the_inputs(
    kind, tmp_path_factory, tmp_path, monkeypatch
):
    src = exported_decoder(tmp_path_factory, kind)
    fed = _both_ways(src, tmp_path, monkeypatch, sparsity=0.5, calib=8)
    # 2 layers, 4 re-fits: the first two probes start from the inputs, the last two from the cache
    assert [bool(f) for f in fed] == [False, False, True, True], fed


def test_encoder_refits_from_the_cache_equal_refits_from_the_inputs(tmp_path_factory, tmp_path, monkeypatch):
    hf = build_tiny_bert(tmp_path_factory.mktemp("hf") / "bert4", hidden=64, heads=4, seed=5)
    src = export_to(hf, tmp_path_factory.mktemp("onnx") / "bert4")
    fed = _both_ways(src, tmp_path, monkeypatch, sparsity=0.5, calib=24)
    # 2 layers; what a BERT layer needs from below: the residual stream and the attention mask
    assert [len(f) for f in fed] == [0, 0, 2, 2], fed


def test_frontier_is_the_boundary_and_what_later_layers_read_from_below():
    graph = text_graphs.load("residual_stack").graph
    # above s1, the second layer reads s1 and the graph input x (fed anyway), and a static tensor
    assert frontier(graph, "s1", ["h2", "s2"]) == ["s1"]
    assert frontier(graph, "h1", ["m2"]) == ["h1"]  # s1 is computed above h1, from h1 and x
    assert "scale" in static_tensors(graph) and "s1" not in static_tensors(graph)


def test_a_fold_below_the_cached_tensors_is_noticed():
    before = text_graphs.load("residual_stack").graph
    after = onnx.GraphProto()
    after.CopyFrom(before)
    after.node[1].input[1] = "w1_folded"  # h1 = MatMul(x, w1_folded): below s1
    assert same_nodes_below(before, before, ["s1"])
    assert not same_nodes_below(before, after, ["s1"])
    assert same_nodes_below(before, after, ["scale"])


def test_a_probe_cut_at_a_tensor_is_fed_it_and_runs_only_what_lies_above():
    """runtime.sessions.probe_session with `cut`: the cut tensor becomes an input, the nodes below
    it go, and a node kept for another of its outputs does not write the fed tensor twice."""
    from onnxopt.runtime.sessions import probe_session

    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) <int64[2] halves = {2, 2}> {
            h = Mul(x, x)
            a, b = Split<axis = 1>(h, halves)
            c = Concat<axis = 1>(a, b)
            s = Add(c, x)
            y = Mul(s, s)
        }"""
    )
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    full = probe_session(model, ["y"], only=True)
    session = probe_session(model, ["y"], only=True, cut={"s": onnx.TensorProto.FLOAT})
    assert {i.name for i in session.get_inputs()} == {"x", "s"}
    s = np.full((2, 4), 3.0, np.float32)
    np.testing.assert_array_equal(session.run(["y"], {"x": x, "s": s})[0], s * s)
    # cut at one output of the Split: it stays for the other, and `a` comes from the feed
    split = probe_session(model, ["c"], only=True, cut={"a": onnx.TensorProto.FLOAT})
    a = np.zeros((2, 2), np.float32)
    got = split.run(["c"], {"x": x, "a": a})[0]
    np.testing.assert_array_equal(got, np.concatenate([a, (x * x)[:, 2:]], axis=1))
    assert full.run(["y"], {"x": x})[0].shape == (2, 4)


def test_a_weight_below_the_cached_tensors_rewritten_under_its_name_is_noticed():
    before = text_graphs.load("residual_stack").graph
    after = onnx.GraphProto()
    after.CopyFrom(before)
    w1 = next(t for t in after.initializer if t.name == "w1")
    w1.CopyFrom(onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32) * 3, "w1"))
    assert not same_nodes_below(before, after, ["s1"])
    assert same_nodes_below(before, after, ["scale"])  # reads no w1


def test_the_cache_lives_on_disk_one_file_a_tensor_and_batch(tmp_path):
    """The stream's values are spilled, so memory holds a batch whatever the text; a tensor the
    next probes no longer need is deleted."""
    model = text_graphs.load("residual_stack")
    rng = np.random.default_rng(0)
    batches = [({"x": rng.normal(size=(3, 4)).astype(np.float32)}, np.ones(3, bool)) for _ in range(2)]
    stream = RefitStream(batches, tmp_path)

    def files():
        return sorted(p.name for p in tmp_path.iterdir())

    first = list(stream.probe(model, ["h1"], ["h1", "h2", "m2", "y"]))
    assert files() == []
    stream.folded(model, model, "s1")
    second = list(stream.probe(model, ["h2"], ["h2", "m2", "y"]))
    assert sorted(stream.cached) == ["s1"] and files() == ["0.npy", "1.npy"]  # s1, two batches
    third = list(stream.probe(model, ["m2"], ["m2", "y"]))  # fed s1 from its files
    stream.folded(model, model, "s2")
    fourth = list(stream.probe(model, ["y"], ["y"]))
    assert sorted(stream.cached) == ["s2"] and files() == ["2.npy", "3.npy"]  # s1's deleted
    runs = [[values for values, _ in r] for r in (first, second, third, fourth)]
    for (feed, _), (h1,), (h2,), (m2,), (y,) in zip(batches, *runs, strict=True):
        x = feed["x"]
        np.testing.assert_allclose(h1, x, rtol=1e-6)
        np.testing.assert_allclose(h2, 2 * (x + x), rtol=1e-6)
        np.testing.assert_allclose(m2, 2 * (x + x) * x, rtol=1e-6)
        np.testing.assert_allclose(y, 4 * (m2 + 2 * x), rtol=1e-6)
