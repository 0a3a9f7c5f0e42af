"""Generation through one buffer per cache tensor (runtime.generation.SharedCache): where
GroupQueryAttention writes the presents, past and present are bound to the same buffer and the
kernel appends in place. It must generate exactly what the copying path does."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.io.cache_layout import cache_layout
from onnxopt.io.rope import rope_tables
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.runtime.generation import Decoder, SharedCache
from tests.passes.test_fuse_decoder_attention import decoder, exported


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A tiny Llama (GQA, heads of 16) as exported, and with its attention fused."""
    folder = exported(tmp_path_factory, "llama")
    model = onnx.load(str(folder / "model.onnx"))
    return model, FuseDecoderAttention(rope_tables(folder))(model).model


def test_only_a_cache_written_by_group_query_attention_is_shared(graphs):
    exported_graph, fused = graphs
    assert not cache_layout(exported_graph).gqa_writes_presents
    assert not decoder(exported_graph).shares_cache
    assert cache_layout(fused).gqa_writes_presents and decoder(fused).shares_cache
    # One present written by something else (here: an Identity after the kernel) and nothing is shared.
    rewired = onnx.ModelProto()
    rewired.CopyFrom(fused)
    last = rewired.graph.output[-1].name
    writer = next(n for n in rewired.graph.node if last in n.output)
    writer.output[list(writer.output).index(last)] = "gqa_present_copy"
    rewired.graph.node.append(onnx.helper.make_node("Identity", ["gqa_present_copy"], [last]))
    assert not cache_layout(rewired).gqa_writes_presents
    # A past read by anything besides its kernel would see the whole buffer: nothing is shared.
    read_twice = onnx.ModelProto()
    read_twice.CopyFrom(fused)
    past = read_twice.graph.input[-1].name
    read_twice.graph.node.append(onnx.helper.make_node("Shape", [past], ["past_length_read"]))
    read_twice.graph.output.append(
        onnx.helper.make_tensor_value_info("past_length_read", onnx.TensorProto.INT64, [4])
    )
    assert not cache_layout(read_twice).gqa_writes_presents


def test_shared_buffers_generate_what_copied_presents_do(graphs, monkeypatch):
    calls = []
    run_shared = SharedCache.__call__
    monkeypatch.setattr(SharedCache, "__call__", lambda self, *a: calls.append(1) or run_shared(self, *a))
    run = decoder(graphs[1])
    prompt = np.random.default_rng(0).integers(3, 60, (2, 12))
    shared = run.greedy(prompt, 10)
    assert len(calls) == 11  # the prefill and ten steps went through the shared buffers
    run.shares_cache = False
    copied = run.greedy(prompt, 10)
    assert len(calls) == 11
    np.testing.assert_array_equal(shared, copied)
    run.shares_cache = True
    first, steps = run.timed(prompt, 6)
    assert first > 0 and len(steps) == 5 and len(calls) == 17


def test_a_step_past_the_capacity_is_refused(graphs):
    run = decoder(graphs[1])
    cache = run.runner(1, 6)
    cache(np.full((1, 5), 7), 0)
    cache(np.full((1, 1), 7), 5)
    with pytest.raises(OnnxoptError, match="the cache holds 6 tokens, this step would make 7"):
        cache(np.full((1, 1), 7), 6)


def test_the_prefill_writes_into_the_buffers_in_place(graphs):
    """After the prefill the first 12 rows of each buffer are the presents the copying path
    returns, and the rows past them are still zero: the kernel wrote into the bound buffer."""
    run = decoder(graphs[1])
    prompt = np.random.default_rng(1).integers(3, 60, (2, 12))
    cache = run.runner(2, 20)
    assert isinstance(cache, SharedCache)
    logits = cache(prompt, 0)
    expected_logits, presents = run.step(prompt, run.empty_past(2), 0)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5)
    for name, buffer in zip(run.layout.past, cache.buffers, strict=True):
        held = buffer.numpy()
        assert held.shape[2] == 20
        np.testing.assert_allclose(held[:, :, :12], presents[name], atol=1e-5)
        assert not held[:, :, 12:].any()


def test_a_session_without_io_binding_copies(graphs):
    """OpenVINO's own runtime (and any provider but the CPU one) keeps the copying path."""

    class NoBinding:
        def __init__(self, session):
            self.run = session.run

    session = ort.InferenceSession(graphs[1].SerializeToString(), providers=["CPUExecutionProvider"])
    run = Decoder(NoBinding(session), cache_layout(graphs[1]))
    assert not run.shares_cache
    prompt = np.random.default_rng(0).integers(3, 60, (1, 8))
    np.testing.assert_array_equal(run.greedy(prompt, 4), decoder(graphs[1]).greedy(prompt, 4))
