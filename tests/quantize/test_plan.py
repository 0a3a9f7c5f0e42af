"""The quantize plan: made once from the user's options, the model's kind and the CPU; the options
stay as given and the manifest records both."""

import json

import pytest

from onnxopt.choices import QDQ_OPS, QUANTIZE_OPS
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.quantize.plan import DECODER, ENCODER, PARTS, make_plan, model_kind


def _plan(kind, reduce_range=False, tokenizer=True, layout=None, **options):
    return make_plan(QuantizeConfig(**options), kind, reduce_range, tokenizer, layout)


def test_encoder_static_cpu_runs_onnxruntimes_fused_layout():
    plan = _plan(ENCODER, mode="static")
    assert plan.optimize and not plan.qdq and plan.ops == QUANTIZE_OPS and not plan.plain_onnx
    assert plan.weight_bits is None and plan.embeddings and plan.smooth and plan.calibrated
    assert plan.activations == "u8" and not plan.attention_core_fp32 and not plan.dynamic_gelu
    assert not plan.fuse_decoder_attention and not plan.pack_projections
    assert plan.smooth_grid == "int8" and "on with --qdq only" in dict(plan.why)["dynamic_gelu"]
    assert _plan(ENCODER, mode="static", qdq=True).dynamic_gelu  # --qdq: on by default
    assert not _plan(ENCODER, mode="dynamic", qdq=True).dynamic_gelu  # static only


@pytest.mark.parametrize("target", ["openvino", "portable"])
def test_plain_onnx_targets_derive_their_layout_and_leave_the_options(target):
    config = QuantizeConfig(mode="static", target=target, dynamic_gelu=True)
    plan = make_plan(config, ENCODER, False, True)
    assert plan.options is config and config.optimize and not config.qdq  # as the user gave them
    assert not plan.optimize and plan.qdq and plan.ops == QDQ_OPS and plan.plain_onnx
    assert not plan.dynamic_gelu and "static scales" in dict(plan.why)["dynamic_gelu"]
    openvino = target == "openvino"
    assert plan.attention_core_fp32 is openvino and plan.smooth_explicit is openvino
    assert plan.activations == ("s8" if openvino else "u8")
    assert "plain ONNX ops" in dict(plan.why)["layout"]
    dynamic = _plan(ENCODER, mode="dynamic", target=target)
    assert dynamic.activations == "u8" and not dynamic.smooth_explicit


def test_decoder_dynamic_is_8bit_weight_only_unless_qdq():
    plan = _plan(DECODER, reduce_range=True, mode="dynamic")
    assert plan.weight_bits == 8 and "2.12x" in dict(plan.why)["weight_bits"]
    assert plan.fuse_decoder_attention and plan.pack_projections
    assert plan.reduce_range and not plan.smooth_reduce_range  # MatMulNBits keeps full-range weights
    qdq = _plan(DECODER, reduce_range=True, mode="dynamic", qdq=True)
    assert qdq.weight_bits is None and not qdq.pack_projections and qdq.smooth_reduce_range
    openvino = _plan(DECODER, mode="dynamic", target="openvino")
    assert openvino.weight_bits is None and not openvino.optimize and openvino.attention_core_fp32


def test_int4_smooths_for_its_grid_and_keeps_the_lm_head_8bit():
    plan = _plan(DECODER, mode="int4")
    assert plan.weight_bits == 4 and plan.lm_head_8bit and "+4.9%" in dict(plan.why)["lm_head_8bit"]
    assert plan.embedding_bits == 8  # int8 rows unless asked
    assert plan.smooth and plan.smooth_grid == "int4" and not plan.calibrated
    assert _plan(DECODER, mode="int4", algo="gptq").calibrated
    assert not _plan(ENCODER, tokenizer=False, mode="int4").smooth  # no text to smooth on
    assert not _plan(DECODER, mode="int4", smooth=False).smooth


def test_head_and_table_bits_follow_the_options():
    small = _plan(DECODER, mode="int4", head_bits=4, embedding_bits=4)
    assert not small.lm_head_8bit and dict(small.why)["lm_head_8bit"] == "--head-bits 4"
    assert small.embedding_bits == 4 and small.embeddings


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "int4", "head_bits": 5}, "--head-bits must be 4 or 8, got 5"),
        ({"mode": "int4", "embedding_bits": 6}, "--embedding-bits must be 4 or 8, got 6"),
        ({"mode": "int4", "embedding_bits": 2}, r"--embedding-bits must be an integer in \[4, 8\], got 2"),
        ({"mode": "dynamic", "head_bits": 4}, "--head-bits 4 is for --int4 models"),
        ({"mode": "static", "embedding_bits": 4}, "--embedding-bits 4 is for --int4 models"),
    ],
)
def test_bad_head_and_table_bits_are_refused_with_a_hint(options, message):
    from onnxopt.errors import OnnxoptError

    with pytest.raises(OnnxoptError, match=message) as caught:
        QuantizeConfig(**options).check()
    assert caught.value.hint


def test_int4_offset_searches_its_blocks_where_there_is_calibration_text():
    plan = _plan(DECODER, mode="int4")
    assert plan.block_search and "E[x^2]" in dict(plan.why)["block_search"]
    assert not _plan(DECODER, tokenizer=False, mode="int4").block_search  # no text to weigh by
    assert not _plan(DECODER, mode="int4", algo="rtn").block_search  # onnxruntime's own grid
    assert not _plan(PARTS, mode="int4").block_search and not _plan(DECODER, mode="dynamic").block_search


def test_encoder_decoder_parts_say_what_they_leave_out():
    int4 = _plan(PARTS, mode="int4")
    why = dict(int4.why)
    assert int4.weight_bits == 4 and not int4.lm_head_8bit and "encoder-decoder" in why["lm_head_8bit"]
    assert not int4.embeddings and "encoder-decoder" in why["embeddings"]
    assert not int4.smooth and int4.smooth_grid == "int8"
    dynamic = _plan(PARTS, mode="dynamic", target="openvino")
    assert dynamic.target == "cpu" and "--target openvino" in dict(dynamic.why)["target"]
    assert dynamic.weight_bits is None and dynamic.optimize and dynamic.smooth
    assert not dynamic.fuse_decoder_attention and not dynamic.pack_projections


def test_auto_builds_one_plan_per_layout():
    config = QuantizeConfig(mode="static", target="auto")
    cpu, openvino = (make_plan(config, ENCODER, False, True, layout) for layout in ("cpu", "openvino"))
    assert cpu.target == "cpu" and cpu.optimize and openvino.target == "openvino" and not openvino.optimize
    assert cpu.options.target == openvino.options.target == "auto"


def test_model_kinds(tiny_bert_onnx, tiny_gpt2_onnx):
    assert model_kind(tiny_bert_onnx) == ENCODER and model_kind(tiny_gpt2_onnx) == DECODER


def test_manifest_records_the_options_as_given_beside_the_plan(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "ov"
    code, _out, err = cli(
        "quantize", tiny_bert_onnx, "--static", "--calib", 4, "--target", "openvino", "-o", out
    )
    assert code == 0, err
    step = json.loads((out / "onnxopt.json").read_text())["steps"][-1]
    options, plan = step["options"], step["plan"]
    assert options["optimize"] is True and options["qdq"] is False and options["exclude"] == []
    assert options["target"] == "openvino" and options["ops"] == list(QUANTIZE_OPS)
    assert plan["optimize"] is False and plan["qdq"] is True and plan["ops"] == list(QDQ_OPS)
    core = plan["exclude"]["attention core"]
    assert core and plan["exclude"]["options"] == [] and step["exclude"] == core
    assert plan["attention_core_fp32"] and "attention core fp32" in plan["why"]["layout"]
