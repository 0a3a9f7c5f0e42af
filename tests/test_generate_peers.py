"""benchmarks/generate_peers.py and its runner's pure parts: greedy continuations cut before
end-of-text and compared position by position, what counts as the model's bytes, and the report's
done-when lines (which bar is met, which is missed) from a table of figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", _BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(_BENCH))  # generate_peers imports run / offgrid lazily, by plain name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(_BENCH))
    return module


peers = _load("generate_peers")
runner = _load("peer_runner")


def test_cut_stops_before_the_first_end_of_text():
    assert runner.cut(np.array([5, 6, 2, 7, 2]), [2]) == [5, 6]
    assert runner.cut([5, 6, 7], [2]) == [5, 6, 7]
    assert runner.cut([2, 5], [0, 2]) == []


def test_log_likelihood_is_the_sum_of_log_softmax_at_the_targets():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    want = np.log(np.exp(3.0) / np.exp([1.0, 2.0, 3.0]).sum()) + np.log(1 / 3)
    assert np.isclose(runner.log_likelihood(logits, np.array([2, 1])), want)


def test_agreement_counts_an_early_or_late_stop_as_differing():
    assert peers.agreement([[1, 2, 3]], [[1, 2, 3]]) == 100.0
    assert peers.agreement([[1, 2]], [[1, 2, 3, 4]]) == 50.0  # stopped two tokens early
    assert peers.agreement([[1, 2, 3, 4]], [[1, 2]]) == 50.0  # ran two tokens past the reference
    assert peers.agreement([[9], [1, 2, 3]], [[1], [1, 2, 3]]) == 75.0  # pooled over prompts


def test_eos_ids_from_generation_config_or_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [0, 2]}))
    assert peers.eos_ids(tmp_path) == [0, 2]
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    assert peers.eos_ids(tmp_path) == [2]


def test_model_bytes_counts_weights_not_tokenizer_files(tmp_path):
    for name, size in (("model.onnx", 10), ("model.onnx.data", 100), ("tokenizer.json", 1000)):
        (tmp_path / name).write_bytes(b"x" * size)
    assert peers.model_bytes(tmp_path) == (110, "model.onnx + model.onnx.data")
    ov = tmp_path / "ov"
    ov.mkdir()
    for name, size in (
        ("openvino_model.xml", 3),
        ("openvino_model.bin", 30),
        ("openvino_tokenizer.bin", 300),
    ):
        (ov / name).write_bytes(b"x" * size)
    assert peers.model_bytes(ov)[0] == 33
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 7)
    assert peers.model_bytes(gguf)[0] == 7


def _row(model, family, precision, **figures):
    return {"model": model, "family": family, "precision": precision, "backend": "onnxopt", **figures}


def test_bars_say_which_bar_is_met_and_which_is_missed():
    rows = [
        _row("onnxopt fp32", "onnxopt", "fp32", perplexity=50.0, decode_tokens_per_s=10.0),
        _row("onnxopt int4 b32 (default)", "onnxopt", "int4", perplexity=51.0, perplexity_change_pct=2.0,
             bits_per_weight=6.0, decode_tokens_per_s=30.0, speed_vs_onnxopt_fp32=3.0,
             speed_vs_llama_q4_k_m=1.2),
        _row("onnxopt 8-bit (--dynamic)", "onnxopt", "8-bit", perplexity_change_pct=0.6),
        _row("llama.cpp Q4_K_M", "llama.cpp", "int4", perplexity=52.0, bits_per_weight=5.0),
        _row("ORT GenAI builder int4 (defaults)", "ORT GenAI", "int4", perplexity=60.0, bits_per_weight=9.0,
             decode_tokens_per_s=25.0),
    ]  # fmt: skip
    text = "\n".join(peers.bars(rows))
    assert "within +3% of fp32: +2.00%: met" in text
    assert "52.00 perplexity (better), 6.00 vs 5.00 bits/weight (onnxopt MORE)" in text
    assert "60.00 perplexity (better), 6.00 vs 9.00 bits/weight (onnxopt fewer)" in text
    assert "8-bit within +0.5%: +0.60%: MISSED" in text
    assert ">= 3.5x onnxopt fp32: 3.00x: MISSED" in text
    fast = "in onnxopt's loop at least as fast as ORT GenAI builder int4 (defaults): 30.0 vs 25.0 tok/s: met"
    assert fast in text
    assert "llama.cpp Q4_K_M decode tok/s: 1.20 (goal >= 1: met)" in text
