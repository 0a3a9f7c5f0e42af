"""benchmarks/offgrid.py's transform on a tiny GQA Llama whose weights were snapped onto a Q4_1 grid:
the function is kept (in memory and through save_pretrained), every linear leaves the grid, and the
seed matters."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "offgrid.py"
_SPEC = importlib.util.spec_from_file_location("offgrid_bench", _PATH)
offgrid = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(offgrid)


def _snap_q4_1(weight: torch.Tensor, block: int = 32) -> None:
    """Each block of `block` input channels onto min + step * q, q in 0..15, as a Q4_1 GGUF holds it."""
    for chunk in torch.split(weight, block, dim=1):
        low = chunk.min(1, keepdim=True).values
        step = (chunk.max(1, keepdim=True).values - low) / 15
        chunk.copy_(low + torch.round((chunk - low) / step) * step)


@pytest.fixture(scope="module")
def tiny():
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA: two query heads per KV head
        max_position_embeddings=64,
        tie_word_embeddings=True,  # as SmolLM2: the copy must untie it
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                _snap_q4_1(module.weight)
        for name, param in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                param.uniform_(0.5, 1.5)  # not all ones, so a norm left unscaled would show
    return model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_copy_keeps_the_function_and_leaves_the_grid(tiny, tmp_path):
    ids = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))
    before = offgrid.grid_fractions(tiny)
    copy = offgrid.offgrid_copy(tiny, seed=3)
    assert set(before) == {f"model.layers.{i}.{p}" for i in range(2) for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")} | {"lm_head"}  # fmt: skip
    assert min(before.values()) == 1.0
    after = offgrid.grid_fractions(copy)
    assert max(after.values()) == 0.0, after
    # off by a fair share of a step, not by rounding: ~0.23 steps for values spread evenly
    assert max(offgrid.grid_offset(m.weight) for m in tiny.modules() if isinstance(m, torch.nn.Linear)) < 1e-6
    assert min(offgrid.grid_offset(m.weight) for m in copy.modules() if isinstance(m, torch.nn.Linear)) > 0.15
    torch.testing.assert_close(_logits(copy, ids), _logits(tiny, ids), atol=1e-4, rtol=0)
    assert offgrid.grid_fractions(tiny) == before  # the source is left alone
    copy.save_pretrained(tmp_path)  # tied again on reload, the head would lose its scales
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(reloaded, ids), _logits(tiny, ids), atol=1e-4, rtol=0)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.model.embed_tokens.weight)


def test_seeds_differ(tiny):
    a, b = offgrid.offgrid_copy(tiny, seed=0), offgrid.offgrid_copy(tiny, seed=1)
    linears = [
        (m, n) for m, n in zip(a.modules(), b.modules(), strict=True) if isinstance(m, torch.nn.Linear)
    ]
    assert len(linears) == 15 and all(not torch.equal(m.weight, n.weight) for m, n in linears)
    again = offgrid.offgrid_copy(tiny, seed=0)
    assert torch.equal(again.model.layers[1].mlp.down_proj.weight, a.model.layers[1].mlp.down_proj.weight)


def test_a_scale_across_a_rope_pair_would_break_the_function(tiny):
    """The q/k scale must be equal on dims i and i + head_dim/2: the check that catches it is live."""
    ids = torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(2))
    copy = offgrid.offgrid_copy(tiny, seed=0)
    with torch.no_grad():
        rows = torch.ones(copy.model.layers[0].self_attn.k_proj.weight.shape[0], 1)
        rows[0] = 2.0  # dim 0 of KV head 0 only, not its RoPE partner (dim 8)
        copy.model.layers[0].self_attn.k_proj.weight.mul_(rows)
        for head in (0, 1):  # both query heads of KV head 0: without RoPE, q.k would be unchanged
            copy.model.layers[0].self_attn.q_proj.weight[16 * head].div_(2.0)
    assert (_logits(copy, ids) - _logits(tiny, ids)).abs().max() > 1e-3
