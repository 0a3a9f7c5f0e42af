"""`bench --generate --runtime genai`: decoders timed through onnxruntime-genai's own loop
(onnxopt/runtime/genai_bench.py), in the same table and JSON as onnxopt's loop, which say so."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from onnxopt.io.genai_config import GENAI_CONFIG
from onnxopt.io.parts import SEQ2SEQ_FILES
from tests.conftest import assert_clean_error, export_to
from tests.prune.test_prune_decoders import build_tiny_decoder

pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (extra genai)")

TINY = ("--batch", 1, "--prompt-len", 8, "--new-tokens", 4, "--runs", 1, "--min-time", 0, "--threads", 1)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    """A tiny GQA Llama export (unfused: genai hands the present back as the next past) and its
    int4 (GroupQueryAttention: one shared cache buffer)."""
    from onnxopt.quantize.workflow import quantize

    hf = build_tiny_decoder("llama", tmp_path_factory.mktemp("hf") / "llama", hidden=64)
    folder = export_to(hf, tmp_path_factory.mktemp("onnx") / "llama")
    quantize(folder, folder.parent / "int4", mode="int4")
    return folder


@pytest.mark.parametrize("runtime", ["genai", "onnxopt"])
def test_bench_generate_says_which_runtime_ran(cli, llama, tmp_path, runtime):
    int4 = llama.parent / "int4"
    config = (int4 / GENAI_CONFIG).read_text()
    out = tmp_path / "bench.json"
    code, stdout, err = cli("bench", llama, int4, "--generate", *TINY, "--runtime", runtime, "--json", out)
    assert code == 0, err
    assert "runtime" in stdout and runtime in stdout
    rows = json.loads(out.read_text())["generation"]
    assert [(r["model"], r["runtime"], r["cache"]) for r in rows] == [
        (str(llama), runtime, "copied"),
        (str(int4), runtime, "shared"),
    ]
    for r in rows:
        assert r["ttft_ms"] > 0 and 0 < r["tpot_p50_ms"] <= r["tpot_p90_ms"] and r["tokens_per_s"] > 0
        assert r["rss_mb"] > 0 and r["generations"] >= 1 and r["settings"]["intra_threads"] == 1
    assert (int4 / GENAI_CONFIG).read_text() == config  # the threads went through og.Config, not the file


def test_genai_times_as_many_decode_steps_as_onnxopt(llama):
    import numpy as np

    from onnxopt.io import model_files
    from onnxopt.runtime.genai_bench import GenaiDecoder
    from onnxopt.runtime.sessions import SessionSettings

    runner = GenaiDecoder.load(model_files.resolve(llama), SessionSettings(intra_threads=1))
    # Left alone, genai ends this prompt at its first new token (<eos>); min_length keeps it going.
    first, steps = runner.timed(np.array([[19, 52, 43, 2]]), 6)
    assert first > 0 and len(steps) == 5 and min(steps) > 0


def test_genai_runtime_refusals_are_one_line(cli, llama, tiny_bert_onnx, tmp_path, monkeypatch):
    code, _out, err = cli("bench", llama, "--runtime", "genai")
    assert_clean_error(code, err, "--runtime genai times generation only", "--generate")
    code, _out, err = cli("bench", llama, "--generate", "--runtime", "genai", "--ep", "openvino")
    assert_clean_error(code, err, "CPU provider only")
    code, _out, err = cli("bench", tiny_bert_onnx, "--generate", "--runtime", "genai", *TINY)
    assert_clean_error(code, err, "has no KV cache to generate through")
    bare = tmp_path / "bare"
    shutil.copytree(llama, bare)
    (bare / GENAI_CONFIG).unlink()
    code, _out, err = cli("bench", llama, bare, "--generate", "--runtime", "genai", *TINY)
    assert_clean_error(code, err, f"{bare} has no genai_config.json", "export or quantize it again")
    parts = tmp_path / "t5"  # an encoder-decoder in parts: refused before any part is read
    parts.mkdir()
    for name in SEQ2SEQ_FILES:
        (parts / name).write_bytes(b"")
    code, _out, err = cli("bench", parts, "--generate", "--runtime", "genai", *TINY)
    assert_clean_error(code, err, "--runtime genai times decoders", "is an encoder-decoder in parts")
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # as if not installed
    code, _out, err = cli("bench", llama, "--generate", "--runtime", "genai", *TINY)
    assert_clean_error(code, err, "onnxruntime-genai", "pip install 'onnxopt[genai]'")
