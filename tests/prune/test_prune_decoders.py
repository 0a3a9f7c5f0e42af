"""Pruning decoders exported with their KV cache: Llama, Qwen2 and Mistral (grouped-query attention,
SwiGLU), Phi-3 (packed qkv_proj and gate_up_proj), GPT-2 (packed c_attn). Tiny random models built
in code, exported with optimum's `text-generation-with-past`: folding equals masking, the model
shrinks, the cache inputs and outputs say each layer's new K/V head count, and generation through
the cache still agrees with a prefill of the whole sequence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxopt.io.cache_layout import cache_layout
from onnxopt.prune.workflow import prune
from onnxopt.runtime.generation import Decoder
from tests.conftest import _WORDS

KINDS = ("llama", "qwen2", "mistral", "phi3", "gpt2")
_EXPORTED: dict[str, Path] = {}  # one export per kind for the whole session (tests/passes reads them)


def build_tiny_decoder(kind: str, folder: Path, hidden: int = 32) -> Path:
    """A random-weight causal LM (hidden 32, 2 layers, 4 query heads of 8, 2 K/V heads where the
    architecture has them, FFN 64) with a word-level tokenizer over the test vocabulary. `hidden`
    64 gives heads of 16, the smallest GroupQueryAttention's CPU kernel runs."""
    import torch
    import transformers as hf
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *sorted(set(_WORDS))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = hf.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    tokenizer.save_pretrained(folder)
    common = dict(vocab_size=len(vocab), bos_token_id=1, eos_token_id=1)
    sizes = dict(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    sizes |= dict(intermediate_size=64, max_position_embeddings=128)
    configs = {
        "llama": (hf.LlamaConfig, hf.LlamaForCausalLM, sizes),
        "qwen2": (hf.Qwen2Config, hf.Qwen2ForCausalLM, sizes),
        "mistral": (hf.MistralConfig, hf.MistralForCausalLM, sizes | {"sliding_window": None}),
        "phi3": (hf.Phi3Config, hf.Phi3ForCausalLM, sizes | {"pad_token_id": 0}),
        "gpt2": (
            hf.GPT2Config,
            hf.GPT2LMHeadModel,
            dict(n_embd=hidden, n_layer=2, n_head=4, n_positions=128),
        ),
    }
    config_class, model_class, extra = configs[kind]
    torch.manual_seed(0)
    model_class(config_class(**common, **extra)).eval().save_pretrained(folder)
    return folder


def export_decoder(hf_folder: Path, out: Path) -> Path:
    """optimum's with-past export, with an onnxopt.json so the folder reads as an onnxopt export."""
    from optimum.exporters.onnx import main_export

    from onnxopt.io.manifest import Manifest

    task = "text-generation-with-past"
    main_export(str(hf_folder), output=str(out), task=task, do_validation=False, library_name="transformers")
    opset = next(o.version for o in onnx.load(str(out / "model.onnx"), load_external_data=False).opset_import)
    Manifest(source=str(hf_folder), task=task, opset=opset).save(out)
    return out


def exported_decoder(tmp_path_factory, kind: str) -> Path:
    """The tiny `kind` decoder, exported once per test session."""
    if kind not in _EXPORTED:
        hf = build_tiny_decoder(kind, tmp_path_factory.mktemp("hf") / kind)
        _EXPORTED[kind] = export_decoder(hf, tmp_path_factory.mktemp("onnx") / kind)
    return _EXPORTED[kind]


def decoder(folder: Path) -> Decoder:
    path = str(folder / "model.onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return Decoder(session, cache_layout(onnx.load(path)))


def last_logits(folder: Path, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last position's logits from a prefill of `ids` whole, and from a prefill of all but
    the last token followed by one decode step that reads the cache the prefill wrote."""
    run = decoder(folder)
    batch, n = ids.shape
    whole, _ = run.step(ids, run.empty_past(batch), 0)
    _, past = run.step(ids[:, :-1], run.empty_past(batch), 0)
    stepped, _ = run.step(ids[:, -1:], past, n - 1)
    return whole, stepped


def parameters(folder: Path) -> int:
    model = onnx.load(str(folder / "model.onnx"))
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    model = onnx.load(str(folder / "model.onnx"))
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return {
        n.name: inits[n.input[1]]
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits
    }


def cache_heads(folder: Path) -> dict[str, int]:
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    values = [*model.graph.input, *model.graph.output]
    return {
        v.name: v.type.tensor_type.shape.dim[1].dim_value
        for v in values
        if ".key" in v.name or ".value" in v.name
    }


@pytest.mark.parametrize("kind", KINDS)
def test_a_pruned_decoder_is_smaller_folds_as_it_masks_and_still_generates(kind, tmp_path_factory, tmp_path):
    src = exported_decoder(tmp_path_factory, kind)
    before = cache_heads(src)
    folded = prune(src, tmp_path / "fold", sparsity=0.5, calib=16)
    prune(src, tmp_path / "mask", sparsity=0.5, calib=16, mask_only=True)
    kv = 4 if kind == "gpt2" else 2  # GPT-2 has one K/V head per query head
    # Every layer's attention and FFN found and pruned; a unit of attention is a K/V head with the
    # query heads that read it.
    assert [(r.layer, r.kind, r.units) for r in folded.layers] == [
        (i, kind_, units)
        for i in range(2)
        for kind_, units in (("attention", 4), ("ffn", 64 if kind != "gpt2" else 128))
    ]
    assert all(r.kept < r.units and r.params_after < r.params_before for r in folded.layers)
    assert parameters(tmp_path / "fold") < 0.8 * parameters(src)
    assert weight_shapes(tmp_path / "mask") == weight_shapes(src)
    # The cache says each layer's K/V heads, and the manifest records them (config.json cannot).
    step = json.loads((tmp_path / "fold" / "onnxopt.json").read_text())["steps"][-1]
    kept = {r["layer"]: r["kv_kept"] for r in step["kv_heads"]}
    assert all(r["kv_heads"] == kv for r in step["kv_heads"]) and all(1 <= k < kv for k in kept.values())
    assert cache_heads(tmp_path / "fold") == {name: kept[int(name.split(".")[-2])] for name in before}
    assert cache_heads(tmp_path / "mask") == before == {name: kv for name in before}
    assert json.loads((tmp_path / "fold" / "config.json").read_text()) == json.loads(
        (src / "config.json").read_text()
    )
    assert any("cache shape is per layer" in note for note in folded.notes)
    ids = np.random.default_rng(0).integers(3, 70, (2, 9))
    whole, stepped = last_logits(tmp_path / "fold", ids)
    np.testing.assert_allclose(stepped, whole, atol=1e-4)
    np.testing.assert_allclose(last_logits(tmp_path / "mask", ids)[0], whole, atol=1e-4)
    assert np.abs(whole - last_logits(src, ids)[0]).max() > 1e-3  # pruning did change the model


def test_prune_cli_on_a_grouped_query_decoder(cli, tmp_path_factory, tmp_path):
    code, out, err = cli(
        "prune", exported_decoder(tmp_path_factory, "llama"), "--sparsity", "0.5", "-o", tmp_path / "p"
    )
    assert code == 0, err
    assert "heads" in out and "neurons" in out and "K/V heads kept per layer" in out
    assert (tmp_path / "p" / "model.onnx").is_file()


@pytest.mark.parametrize("kind", ["llama", "phi3"])
def test_folding_the_plans_one_block_at_a_time_equals_folding_them_at_once(
    kind, tmp_path_factory, tmp_path, monkeypatch
):
    """The re-fits probe a model folded one block at a time (prune/workflow.py); the written model
    folds every plan at once. Both must be the same model, or each re-fit fits a model that is
    not the one written."""
    from onnxopt.passes.prune_fold import FoldPruned
    from onnxopt.prune import workflow

    calls = []

    class Recorded(FoldPruned):
        def __init__(self, ffn, heads, mask_only=False):
            calls.append((list(ffn), list(heads)))
            super().__init__(ffn, heads, mask_only)

    monkeypatch.setattr(workflow, "FoldPruned", Recorded)
    src = exported_decoder(tmp_path_factory, kind)
    prune(src, tmp_path / "out", sparsity=0.5, calib=8)
    model = onnx.load(str(src / "model.onnx"))
    at_once = FoldPruned(*calls[-1])(model).model
    stepwise = model
    for ffn, heads in calls[:-1]:
        stepwise = FoldPruned(ffn, heads)(stepwise).model
    assert len(calls) == 4  # three one-block folds for the probes, then the written model
    folded_before = [id(p) for ffn, heads in calls[:-1] for p in ffn + heads]
    for plan in calls[-1][0] + calls[-1][1]:  # the last block's plan: no probe above it
        if id(plan) not in folded_before:
            one = ([plan], []) if any(plan is p for p in calls[-1][0]) else ([], [plan])
            stepwise = FoldPruned(*one)(stepwise).model
    assert [n.SerializeToString() for n in stepwise.graph.node] == [
        n.SerializeToString() for n in at_once.graph.node
    ]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in at_once.graph.initializer}
    assert {t.name for t in stepwise.graph.initializer} == set(inits)
    for t in stepwise.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), inits[t.name])
