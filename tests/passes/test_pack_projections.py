"""Projections packed into one MatMul: tiny random Llama (SwiGLU, GQA) and Qwen2 (q/k/v biases)
exported with optimum, fused, packed: same logits and cache as before packing, on a prefill and
decode steps; the int4 model of the packed graph computes what the unpacked one's does."""

from __future__ import annotations

import onnx
import pytest

from onnxopt.io.rope import rope_tables
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.passes.pack_projections import PackProjections
from tests.passes.test_fuse_decoder_attention import assert_same_generation, exported
from tests.passes.util import unchanged_by


def _fused(tmp_path_factory, kind: str) -> onnx.ModelProto:
    folder = exported(tmp_path_factory, kind)
    return FuseDecoderAttention(rope_tables(folder))(onnx.load(str(folder / "model.onnx"))).model


def test_llama_q_k_v_reach_attention_packed_and_gate_up_share_one_matmul(tmp_path_factory):
    fused = _fused(tmp_path_factory, "llama")
    result = unchanged_by(PackProjections(), fused)
    packed = result.model
    gqa = [n for n in packed.graph.node if n.op_type == "GroupQueryAttention"]
    # Two layers: q|k|v and gate|up each; the LM head and o/down projections read inputs of their own.
    assert result.details["packed"] == 4 and result.details["packed_qkv"] == 2
    assert gqa and all(n.input[1] == "" and n.input[2] == "" for n in gqa)
    before = sum(n.op_type == "MatMul" for n in fused.graph.node)
    assert sum(n.op_type == "MatMul" for n in packed.graph.node) == before - 5 * 2 + 2 * 2
    assert sum(n.op_type == "Split" for n in packed.graph.node) == 2  # gate|up only
    assert_same_generation(fused, packed)


def test_qwen2_biases_keep_the_split_and_say_why(tmp_path_factory):
    fused = _fused(tmp_path_factory, "qwen2")
    result = unchanged_by(PackProjections(), fused)
    assert result.details["packed"] == 4 and result.details["packed_qkv"] == 0
    reasons = set(result.details["skipped"].values())
    assert reasons == {
        "packed q|k|v into GroupQueryAttention: q, k and v are not the three outputs of one packed projection"
    }
    assert_same_generation(fused, result.model)


def test_excluded_projections_stay_apart(tmp_path_factory):
    fused = _fused(tmp_path_factory, "llama")
    q = next(n.name for n in fused.graph.node if n.op_type == "MatMul" and "q_proj" in n.name)
    result = PackProjections(exclude=(q,))(fused)
    assert q in {n.name for n in result.model.graph.node}
    assert result.details["packed"] == 4 and result.details["packed_qkv"] == 1  # k|v of that layer still pack


@pytest.mark.parametrize("algo", ["offset", "rtn"])
def test_int4_of_the_packed_graph_computes_what_the_unpacked_one_does(tmp_path_factory, algo):
    from onnxopt.passes.quantize_weights import QuantizeWeights

    fused = _fused(tmp_path_factory, "llama")
    packed = PackProjections()(fused).model
    int4 = QuantizeWeights(4, 32, algo, 4, ())
    assert_same_generation(int4(fused).model, int4(packed).model, atol=2e-4)
