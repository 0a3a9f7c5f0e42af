import json
import shutil

from onnxopt.evaluation import evaluate
from tests.conftest import assert_clean_error

PAIRS = (
    "g\tf\t2012\t1\t5.0\ta man plays music\ta man plays music\n"
    "g\tf\t2012\t2\t3.0\ta dog runs in the park\ta dog walks in the park\n"
    "g\tf\t2012\t3\t0.5\tthe train is new\tthe cat eats food\n"
    "g\tf\t2012\t4\t1.0\tred car\tblue book\n"
)


def test_fidelity_of_a_model_with_itself_is_exact(tiny_bert_onnx):
    result = evaluate(tiny_bert_onnx, tiny_bert_onnx, limit=5, record=False)
    assert result.fidelity.samples == 5
    assert result.fidelity.min_cosine > 0.999999 and result.fidelity.max_abs_diff == 0.0


def test_fidelity_of_int8_is_recorded_in_its_manifest(cli, tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    model = tmp_path / "dyn"
    shutil.copytree(tiny_bert_dynamic, model)  # the shared fixture's manifest stays as it was
    code, out, err = cli("eval", model, "--reference", tiny_bert_onnx, "--limit", 8)
    assert code == 0, err
    assert "output cosine" in out
    step = json.loads((model / "onnxopt.json").read_text())["steps"][-1]
    assert step["step"] == "eval" and step["fidelity"]["samples"] == 8
    assert 0.98 < step["fidelity"]["mean_cosine"] <= 1.0 + 1e-9
    assert step["fidelity"]["max_abs_diff"] > 0


def test_sts_spearman_and_drop(cli, tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    data = tmp_path / "pairs.csv"
    data.write_text(PAIRS)
    result = evaluate(tiny_bert_dynamic, tiny_bert_onnx, task="sts", data=str(data), record=False)
    assert result.metric_name == "spearman_x100"
    assert -100 <= result.metric <= 100 and result.drop == result.reference_metric - result.metric


def test_eval_errors(cli, tiny_bert_onnx, tmp_path):
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "bleu")
    assert_clean_error(code, err, "unknown eval task 'bleu'")
    code, _o, err = cli("eval", tiny_bert_onnx)
    assert_clean_error(code, err, "needs a reference model")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "sts")
    assert_clean_error(code, err, "--data")
    code, _o, err = cli("eval", tiny_bert_onnx, "--reference", tiny_bert_onnx, "--limit", 0)
    assert_clean_error(code, err, "--limit must be at least 1")
    empty = tmp_path / "empty.csv"
    empty.write_text("not\tenough\n")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "sts", "--data", empty)
    assert_clean_error(code, err, "holds no STS pairs")
