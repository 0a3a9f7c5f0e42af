"""Accuracy-aware fallback on a tiny model with a planted outlier channel."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxopt.quantize.workflow import quantize
from tests.conftest import assert_clean_error

LAYER = 1


@pytest.fixture(scope="module")
def planted(tiny_bert_onnx, tmp_path_factory):
    """Channel 3 of layer 1's FFN activations shifted by +60 through its bias: the down projection's
    input range is then set by one channel, and per-tensor int8 crushes the others to a few levels.
    The weights stay as they were, so only that activation is hard to quantize."""
    folder = tmp_path_factory.mktemp("planted") / "fp32"
    shutil.copytree(tiny_bert_onnx, folder)
    model = onnx.load(str(folder / "model.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    up = next(
        n for n in model.graph.node if n.op_type == "MatMul" and f"layer.{LAYER}/intermediate/dense" in n.name
    )
    weight = inits[up.input[1]]
    w = numpy_helper.to_array(weight).copy()
    w[:, 3] *= 200.0
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    onnx.save(model, str(folder / "model.onnx"))
    return folder


def test_fallback_keeps_the_planted_node_in_fp32(planted, tmp_path):
    result = quantize(planted, tmp_path / "q", mode="static", calib=8, max_drop=0.0001)
    fallback = result.options["fallback"]
    assert fallback["kept_fp32"], fallback
    first = fallback["kept_fp32"][0]
    # The culprit is found in the planted layer's FFN (the MatMul pair around the shifted channel).
    assert first["node"] in {
        f"/encoder/layer.{LAYER}/intermediate/dense/MatMul",
        f"/encoder/layer.{LAYER}/output/dense/MatMul",
    }, fallback
    assert first["drop_after"] < fallback["start_drop"]
    assert fallback["final_drop"] == min(k["drop_after"] for k in fallback["kept_fp32"])
    kept = {n.name: n.op_type for n in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.node}
    assert kept[first["node"]] == "MatMul"  # no QDQ fused into it: it stays fp32
    manifest = json.loads((tmp_path / "q" / "onnxopt.json").read_text())
    assert manifest["steps"][-1]["fallback"]["eval_data"] == "held-back calibration samples"


def test_loose_bound_keeps_everything_quantized(planted, tmp_path):
    result = quantize(planted, tmp_path / "q", mode="static", calib=8, max_drop=100.0)
    fallback = result.options["fallback"]
    assert fallback["reached"] and fallback["kept_fp32"] == []
    assert fallback["final_drop"] == fallback["start_drop"]


def test_sts_eval_data_drives_the_search(planted, tmp_path, cli):
    """With --eval-data the drop is in Spearman points on those pairs. Their gold scores are the fp32
    model's own cosines, so fp32 scores 100 and int8 starts below it: the search must run. 100 pairs,
    not 30: with smoothing and calibrated GELU inputs, int8 moved 30 pairs' cosines by at most 0.003
    and kept their order exactly on an AMD EPYC (Spearman 1.0); 100 pairs gave 0.9998."""
    from onnxopt.data.samples import input_types, load_tokenizer
    from onnxopt.data.sts_pairs import StsPair
    from onnxopt.evaluate.sts import sts_cosines
    from onnxopt.io import model_files
    from onnxopt.runtime.sessions import make_session

    rng = np.random.default_rng(0)
    words = "a man plays music the dog runs in park cat eats food red car blue book".split()
    texts = [(" ".join(rng.choice(words, 5)), " ".join(rng.choice(words, 5))) for _ in range(100)]
    ref = model_files.resolve(planted)
    session = make_session(ref.onnx_path)
    types = input_types(model_files.load(ref, load_weights=False))
    gold = sts_cosines(session, load_tokenizer(ref.folder), types, [StsPair(0.0, a, b) for a, b in texts])
    pairs = tmp_path / "pairs.csv"
    rows = [f"g\tf\t2012\t{i}\t{5 * gold[i]:.6f}\t{a}\t{b}\n" for i, (a, b) in enumerate(texts)]
    pairs.write_text("".join(rows))
    out = tmp_path / "q"
    search = ("--max-drop", 0, "--eval-data", pairs)
    code, stdout, err = cli("quantize", planted, "--static", "--calib", 8, *search, "-o", out)
    assert code == 0, err
    fallback = json.loads((out / "onnxopt.json").read_text())["steps"][-1]["fallback"]
    assert fallback["metric"] == "sts" and fallback["eval_data"] == str(pairs)
    assert fallback["start_drop"] > 0 and fallback["kept_fp32"], fallback
    assert fallback["final_drop"] < fallback["start_drop"]
    assert "drop in Spearman points" in stdout


def test_fallback_option_errors(cli, planted, tmp_path):
    code, _o, err = cli("quantize", planted, "--static", "--max-drop", "-1", "-o", tmp_path / "q")
    assert_clean_error(code, err, "--max-drop must be a number, 0 or more")
    code, _o, err = cli("quantize", planted, "--static", "--eval-data", "x.csv", "-o", tmp_path / "q")
    assert_clean_error(code, err, "pass --max-drop")
    code, _o, err = cli(
        "quantize",
        planted,
        "--static",
        "--max-drop",
        "0.1",
        "--eval-data",
        tmp_path / "none.csv",
        "-o",
        tmp_path / "q",
    )
    assert_clean_error(code, err, "does not exist")
    assert not (tmp_path / "q").exists()
