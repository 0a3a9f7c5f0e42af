"""A causal LM through the whole command line, as a user runs it: a tiny random Llama (grouped-query
attention, heads of 16) built in code, `onnxopt export` (with its KV cache by default), then
quantize dynamic / static / int4, optimize, bench --generate, eval perplexity and generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from onnxopt.passes.quantize_weights_offset import INDICATOR_PREFIX
from tests.conftest import assert_clean_error
from tests.prune.test_prune_decoders import build_tiny_decoder

_EXPORTED: dict[str, Path] = {}


@pytest.fixture
def llama(cli, tmp_path_factory) -> Path:
    """The tiny Llama exported by `onnxopt export`, once per session."""
    if "llama" not in _EXPORTED:
        hf = build_tiny_decoder("llama", tmp_path_factory.mktemp("hf") / "llama", hidden=64)
        out = tmp_path_factory.mktemp("onnx") / "llama"
        code, _out, err = cli("export", hf, "-o", out)
        assert code == 0, err
        _EXPORTED["llama"] = out
    return _EXPORTED["llama"]


def ops(folder: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node]


def test_export_writes_the_cache_and_checks_generation(llama):
    graph = onnx.load(str(llama / "model.onnx"), load_external_data=False).graph
    assert "past_key_values.1.value" in [i.name for i in graph.input]
    assert "present.1.value" in [o.name for o in graph.output]
    step = json.loads((llama / "onnxopt.json").read_text())["steps"][0]
    assert step["task"] == "text-generation-with-past"


@pytest.mark.parametrize(
    ("mode", "layout_op"),
    [("--dynamic", "MatMulNBits"), ("--int4", "MatMulNBits"), ("--static", "MatMulIntegerToFloat")],
)
def test_quantized_decoders_are_fused_and_still_generate(cli, llama, tmp_path, mode, layout_op):
    out = tmp_path / "q"
    code, stdout, err = cli("quantize", llama, mode, "--calib", 4, "-o", out)
    assert code == 0, err
    found = ops(out)
    assert found.count("GroupQueryAttention") == 2 and "Softmax" not in found
    # int4's block offsets read the inputs' block sums, a MatMul by a 0/1 indicator: no weight.
    weight_matmuls = [
        n.name
        for n in onnx.load(str(out / "model.onnx")).graph.node
        if n.op_type == "MatMul" and not n.input[1].startswith(INDICATOR_PREFIX)
    ]
    assert layout_op in found and not weight_matmuls, sorted(set(found))
    if mode != "--static":
        bits = {
            a.i
            for n in onnx.load(str(out / "model.onnx")).graph.node
            for a in n.attribute
            if a.name == "bits"
        }
        assert bits == ({8} if mode == "--dynamic" else {4, 8})  # int4: the LM head stays 8-bit
        layout = json.loads((out / "onnxopt.json").read_text())["steps"][-1]["layout"]
        assert ("LM head 8-bit" in layout) == (mode == "--int4") and "embedding int8 per row" in layout
        assert ("offset, blocks searched" in layout) == (mode == "--int4")  # calibration text at hand
    code, stdout, err = cli(
        "eval", out, "--task", "generation", "--reference", llama, "--limit", 2, "--new-tokens", 8
    )
    assert code == 0, err
    agreement = json.loads((out / "onnxopt.json").read_text())["steps"][-1]
    assert agreement["step"] == "eval" and "generation" in json.dumps(agreement)


def test_bench_generate_times_each_model_and_says_its_peak_memory(cli, llama, tmp_path):
    out = tmp_path / "q"
    assert cli("quantize", llama, "--int4", "-o", out)[0] == 0
    report = tmp_path / "gen.json"
    code, stdout, err = cli(
        "bench", llama, out, "--generate", "--prompt-len", 16, "--new-tokens", 8, "--batch", "1,2",
        "--runs", 2, "--min-time", 0, "--json", report,
    )  # fmt: skip
    assert code == 0, err
    assert "tok/s" in stdout and "RSS MB" in stdout
    rows = json.loads(report.read_text())["generation"]
    assert [(Path(r["model"]).name, r["batch"]) for r in rows] == [
        ("llama", 1),
        ("q", 1),
        ("llama", 2),
        ("q", 2),
    ]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["tpot_p90_ms"] >= row["tpot_p50_ms"] > 0
        assert 50 < row["rss_mb"] < 4000  # a fresh process's high-water mark, Python included
    assert rows[0]["speedup"] == 1.0
    # The export has no GroupQueryAttention: it copies its presents; the quantized model is fused.
    assert [r["cache"] for r in rows] == ["copied", "shared", "copied", "shared"]


def test_bench_generate_refuses_a_model_without_a_cache(cli, tiny_bert_onnx):
    code, _out, err = cli("bench", tiny_bert_onnx, "--generate", "--new-tokens", 4)
    assert_clean_error(code, err, "has no KV cache to generate through")


def test_perplexity_through_the_cache(cli, llama, tmp_path):
    llama = Path(shutil.copytree(llama, tmp_path / "m"))  # eval records into the model's manifest
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["the cat sat on the mat and the dog ran in the park"] * 20))
    code, stdout, err = cli("eval", llama, "--task", "perplexity", "--data", text)
    assert code == 0, err
    step = json.loads((llama / "onnxopt.json").read_text())["steps"][-1]
    vocab = json.loads((llama / "config.json").read_text())["vocab_size"]
    # A random model is near uniform over its vocabulary: perplexity close to (under) its size.
    assert step["metric"] == "perplexity" and 1 < step["value"] < 2 * vocab


def test_generation_eval_needs_a_reference(cli, llama):
    code, _out, err = cli("eval", llama, "--task", "generation")
    assert_clean_error(code, err, "the generation task compares greedy generation with a reference model")


def test_bench_generate_refuses_more_positions_than_the_model_has(cli, llama):
    code, _out, err = cli("bench", llama, "--generate", "--prompt-len", 120, "--new-tokens", 16)
    assert_clean_error(code, err, "--prompt-len plus --new-tokens 136 exceeds", "max_position_embeddings 128")


def test_generation_eval_refuses_more_new_tokens_than_positions(cli, llama, tmp_path):
    code, _out, err = cli("eval", llama, "--task", "generation", "--reference", llama, "--new-tokens", 500)
    assert_clean_error(
        code, err, "--new-tokens 500 leaves no room for a prompt", "use --new-tokens 64 or less"
    )


@pytest.mark.parametrize("kind", ["gpt2", "qwen2", "mistral"])
def test_other_decoders_through_the_command_line(cli, tmp_path, kind):
    """GPT-2 (no rotary, unfused attention), Qwen2 (q/k/v biases), Mistral: the same path as Llama."""
    hf = build_tiny_decoder(kind, tmp_path / "hf", hidden=64)
    assert cli("export", hf, "-o", tmp_path / "fp32")[0] == 0
    code, _out, err = cli(
        "quantize", tmp_path / "fp32", "--dynamic", "-o", tmp_path / "q", "--verify-loading"
    )
    assert code == 0, err
    fused = ops(tmp_path / "q").count("GroupQueryAttention")
    assert fused == (0 if kind == "gpt2" else 2)
    code, stdout, err = cli(
        "bench", tmp_path / "fp32", tmp_path / "q", "--generate", "--prompt-len", 8, "--new-tokens", 4,
        "--runs", 2, "--min-time", 0,
    )  # fmt: skip
    assert code == 0 and "tok/s" in stdout, err
    code, _out, err = cli(
        "eval",
        tmp_path / "q",
        "--task",
        "generation",
        "--reference",
        tmp_path / "fp32",
        "--limit",
        2,
        "--new-tokens",
        4,
    )
    assert code == 0, err
