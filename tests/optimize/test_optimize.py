import json

import onnx

from tests.conftest import assert_clean_error


def test_optimize_fuses_and_checks_parity(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "opt"
    code, stdout, err = cli("optimize", tiny_bert_onnx, "-o", out)
    assert code == 0, err
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= ops
    step = json.loads((out / "onnxopt.json").read_text())["steps"][-1]
    assert step["step"] == "optimize" and step["fused"]["Attention"] == 2
    assert step["parity"]["max_abs_diff"] < 1e-4 and step["parity"]["samples"] == 8
    assert "parity" in stdout


def test_optimize_fails_above_atol_and_writes_nothing(cli, tiny_bert_onnx, tmp_path):
    code, _out, err = cli("optimize", tiny_bert_onnx, "-o", tmp_path / "opt", "--atol", "0")
    assert_clean_error(code, err, "differ from the input model's", "--atol 0")
    assert list(tmp_path.iterdir()) == []


def test_optimize_graph_without_rules_keeps_it(cli, graph_file, tmp_path):
    code, stdout, err = cli("optimize", graph_file("mlp"), "-o", tmp_path / "opt")
    assert code == 0, err
    assert "no fusion rules for model type None" in stdout
    assert [n.op_type for n in onnx.load(str(tmp_path / "opt" / "model.onnx")).graph.node] == [
        "MatMul",
        "Add",
        "Relu",
        "MatMul",
        "Add",
    ]


def test_optimize_skip_leaves_that_rule_out(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "opt"
    code, _stdout, err = cli("optimize", tiny_bert_onnx, "-o", out, "--skip", "fuse")
    assert code == 0, err
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert not ops & {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"}, ops
    assert json.loads((out / "onnxopt.json").read_text())["steps"][-1]["fused"] == {}


def test_optimize_skip_of_an_unknown_rule_fails_before_any_work(cli, tiny_bert_onnx, tmp_path):
    code, _out, err = cli("optimize", tiny_bert_onnx, "-o", tmp_path / "opt", "--skip", "fuse,nonesuch")
    assert_clean_error(code, err, "--skip names no rule: nonesuch", "fuse, fuse-decoder-attention")
    assert list(tmp_path.iterdir()) == []
