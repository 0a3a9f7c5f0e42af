"""The bundled all-MiniLM-L6-v2 through export, int8, pruning and bench, checked on STS-B dev."""

import json

import pytest

from onnxopt.data.sts_pairs import load_sts_pairs
from onnxopt.evaluate.sts import sts_spearman
from onnxopt.prune.workflow import prune
from onnxopt.quantize.workflow import quantize
from tests.conftest import STSB

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    return tmp_path_factory.mktemp("minilm")


def test_bundled_model_pipeline(cli, minilm):
    fp32, static, dynamic = minilm / "fp32", minilm / "int8", minilm / "dyn"
    code, out, err = cli("export", "-o", fp32)
    assert code == 0, err
    assert "last_hidden_state" in out
    code, out, err = cli("quantize", fp32, "--static", "--calib", 40, "-o", static)
    assert code == 0, err
    assert "40 samples" in out
    code, _out, err = cli("quantize", fp32, "--dynamic", "-o", dynamic)
    assert code == 0, err
    code, out, err = cli(
        "bench",
        fp32,
        static,
        dynamic,
        "--batch",
        "1,4",
        "--seq-len",
        64,
        "--runs",
        3,
        "--min-time",
        0,
        "--json",
        minilm / "bench.json",
    )
    assert code == 0, err
    rows = json.loads((minilm / "bench.json").read_text())["results"]
    assert len(rows) == 6
    assert all(r["size_bytes"] < 25_000_000 for r in rows if r["model"] != str(fp32))


@pytest.mark.skipif(not (STSB / "sts-dev.csv").is_file(), reason="STS-B dev split not found beside the repo")
def test_bundled_int8_accuracy_on_stsb_dev(minilm):
    pairs = load_sts_pairs(STSB / "sts-dev.csv")
    scores = {name: sts_spearman(minilm / name, pairs, threads=2) for name in ("fp32", "int8", "dyn")}
    assert scores["fp32"] > 85, scores
    assert scores["fp32"] - scores["int8"] <= 1.0, scores
    assert scores["fp32"] - scores["dyn"] <= 0.5, scores


@pytest.mark.skipif(not (STSB / "sts-dev.csv").is_file(), reason="STS-B dev split not found beside the repo")
def test_bundled_pruned_heads_and_ffn_keep_accuracy(minilm):
    """Issue 4's bar: half the encoder's linear weights gone (heads and FFN), STS-B dev drop <= 0.5,
    and <= 0.8 after static int8 (measured 0.16 and 0.21)."""
    result = prune(minilm / "fp32", minilm / "pruned", sparsity=0.5)
    before, after = result.linear_params
    assert after <= 0.6 * before
    assert {r.kind for r in result.layers if r.kept < r.units} == {"attention", "ffn"}
    quantize(minilm / "pruned", minilm / "pruned-int8", mode="static", calib=40)
    pairs = load_sts_pairs(STSB / "sts-dev.csv")
    scores = {n: sts_spearman(minilm / n, pairs, threads=2) for n in ("fp32", "pruned", "pruned-int8")}
    assert scores["fp32"] - scores["pruned"] <= 0.5, scores
    assert scores["fp32"] - scores["pruned-int8"] <= 0.8, scores
