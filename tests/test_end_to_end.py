"""The bundled all-MiniLM-L6-v2 through export, static and dynamic int8, and bench, checked on STS-B dev."""

import json

import pytest

from onnxopt.evaluate import load_sts_pairs, sts_spearman
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
        "--seq",
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
