"""GroupQueryAttention fusion of Llama-family decoders exported with past: tiny random Llama and
Qwen2 (hidden 64: heads of 16, the smallest the CPU kernel runs) built in code and exported with
optimum. The fused graph must give the unfused one's logits and cache, on a prefill and on decode
steps, for the full model and for one pruned to fewer heads per layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxopt.io.cache_layout import cache_layout
from onnxopt.io.rope import RopeTables, rope_tables
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.prune.workflow import prune
from onnxopt.runtime.generation import Decoder
from tests.passes.util import unchanged_by
from tests.prune.test_prune_decoders import build_tiny_decoder, export_decoder

_EXPORTS: dict[tuple[str, int], Path] = {}


def exported(tmp_path_factory, kind: str, hidden: int = 64) -> Path:
    if (kind, hidden) not in _EXPORTS:
        hf = build_tiny_decoder(kind, tmp_path_factory.mktemp("hf") / kind, hidden=hidden)
        _EXPORTS[kind, hidden] = export_decoder(hf, tmp_path_factory.mktemp("onnx") / kind)
    return _EXPORTS[kind, hidden]


def decoder(model: onnx.ModelProto) -> Decoder:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return Decoder(session, cache_layout(model))


def assert_same_generation(a: onnx.ModelProto, b: onnx.ModelProto, atol: float = 1e-5) -> None:
    """Prefill (batch 2, 12 tokens) then two decode steps: same logits and cache."""
    run_a, run_b = decoder(a), decoder(b)
    ids = np.random.default_rng(0).integers(3, 60, (2, 12))
    past_a, past_b = run_a.empty_past(2), run_b.empty_past(2)
    for step, chunk in enumerate((ids, ids[:, -1:], ids[:, -2:-1])):
        at = 0 if step == 0 else 11 + step
        logits_a, past_a = run_a.step(chunk, past_a, at)
        logits_b, past_b = run_b.step(chunk, past_b, at)
        np.testing.assert_allclose(logits_b, logits_a, atol=atol)
        for name in past_a:
            np.testing.assert_allclose(past_b[name], past_a[name], atol=atol)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_fused_attention_generates_as_the_export_does(kind, tmp_path_factory):
    folder = exported(tmp_path_factory, kind)
    model = onnx.load(str(folder / "model.onnx"))
    result = unchanged_by(FuseDecoderAttention(rope_tables(folder)), model)
    assert result.modified and result.details["layers"] == [0, 1] and result.details["skipped"] == {}
    fused = result.model
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("GroupQueryAttention") == 2 and "Softmax" not in ops and "Neg" not in ops
    assert len(fused.graph.node) < 0.3 * len(model.graph.node)
    assert [i.name for i in fused.graph.input] == [i.name for i in model.graph.input]  # same interface
    assert_same_generation(model, fused)
    again = FuseDecoderAttention(rope_tables(folder))(fused)
    assert not again.modified and again.details["skipped"] == {"graph": "graph is already fused"}


def test_a_pruned_decoder_fuses_with_each_layers_own_heads(tmp_path_factory, tmp_path):
    folder = exported(tmp_path_factory, "llama")
    prune(folder, tmp_path / "p", sparsity=0.5, calib=8)
    model = onnx.load(str(tmp_path / "p" / "model.onnx"))
    kept = {
        r["layer"]: r["kv_kept"]
        for r in json.loads((tmp_path / "p" / "onnxopt.json").read_text())["steps"][-1]["kv_heads"]
    }
    fused = FuseDecoderAttention(rope_tables(folder))(model).model
    gqa = [n for n in fused.graph.node if n.op_type == "GroupQueryAttention"]
    kv_heads = [next(a.i for a in n.attribute if a.name == "kv_num_heads") for n in gqa]
    assert kv_heads == [kept[0], kept[1]] and any(k < 2 for k in kv_heads)
    assert_same_generation(model, fused)


def test_heads_the_cpu_kernel_cannot_run_are_left_with_the_reason(tmp_path_factory):
    folder = exported(tmp_path_factory, "llama", hidden=32)  # heads of 8
    model = onnx.load(str(folder / "model.onnx"))
    result = FuseDecoderAttention(rope_tables(folder))(model)
    assert not result.modified
    assert result.details["skipped"]["layer 0"] == (
        "head size 8 is not a multiple of 16 (GroupQueryAttention's CPU kernel)"
    )


def test_a_model_without_tables_or_cache_is_left_with_the_reason(tmp_path_factory):
    folder = exported(tmp_path_factory, "llama")
    model = onnx.load(str(folder / "model.onnx"))
    result = FuseDecoderAttention("no rotary tables for model type 'gpt2'")(model)
    assert result.details["skipped"] == {"graph": "no rotary tables for model type 'gpt2'"}
    tables = RopeTables(np.zeros((4, 8), np.float32), np.zeros((4, 8), np.float32))
    no_cache = onnx.ModelProto()
    no_cache.CopyFrom(model)
    keep = [i for i in no_cache.graph.input if not i.name.startswith("past_key_values.")]
    del no_cache.graph.input[:]
    no_cache.graph.input.extend(keep)
    reason = FuseDecoderAttention(tables)(no_cache).details["skipped"]["graph"]
    assert reason == "no past_key_values inputs: export with the cache (the default for decoders)"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"model_type": "gpt2"}, "no rotary tables for model type 'gpt2'"),
        ({"sliding_window": 16}, "its attention is a sliding window of 16 tokens"),
        (
            {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
            "its rope (dynamic) changes with the sequence length",
        ),
    ],
)
def test_rope_tables_say_why_there_are_none(extra, reason, tmp_path):
    config = {"model_type": "llama", "max_position_embeddings": 128, "hidden_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(config | extra))
    assert rope_tables(tmp_path) == reason


def test_rope_tables_match_the_models_rotary_embedding(tmp_path_factory):
    import torch
    import transformers as hf

    folder = exported(tmp_path_factory, "llama")
    tables = rope_tables(folder)
    config = hf.AutoConfig.from_pretrained(str(folder))
    rotary = hf.models.llama.modeling_llama.LlamaRotaryEmbedding(config)
    positions = torch.arange(config.max_position_embeddings)[None]
    cos, sin = rotary(torch.zeros(1), positions)
    half = cos.shape[-1] // 2
    np.testing.assert_allclose(tables.cos, cos[0, :, :half].numpy(), atol=1e-5)
    np.testing.assert_allclose(tables.sin, sin[0, :, :half].numpy(), atol=1e-5)
