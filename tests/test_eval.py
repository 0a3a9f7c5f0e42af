import json
import random
import shutil

import pytest

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


def _genre_rows(genre: str, n: int, seed: int) -> str:
    words = "man woman dog cat plays runs eats sings red blue car train park food music book".split()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = " ".join(rng.choices(words, k=5))
        b = " ".join(rng.choices(words, k=5))
        rows.append(f"main\t{genre}\t2012\t{i}\t{rng.uniform(0, 5):.2f}\t{a}\t{b}\n")
    return "".join(rows)


def test_sts_reports_each_genre_with_enough_pairs(cli, tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    news, forum, few = _genre_rows("news", 24, 1), _genre_rows("forum", 30, 2), _genre_rows("few", 5, 3)
    data = tmp_path / "pairs.csv"
    data.write_text(news + forum + few)
    result = evaluate(tiny_bert_dynamic, tiny_bert_onnx, task="sts", data=str(data), record=False)
    assert set(result.extras) == {"spearman_x100 news", "spearman_x100 forum"}  # "few" has < 20 pairs
    # A genre's figure is the metric of that genre's pairs on their own.
    alone = tmp_path / "forum.csv"
    alone.write_text(forum)
    only = evaluate(tiny_bert_dynamic, tiny_bert_onnx, task="sts", data=str(alone), record=False)
    assert only.extras == {}  # one genre: nothing to break down
    assert result.extras["spearman_x100 forum"] == (
        pytest.approx(only.metric, abs=1e-9),
        pytest.approx(only.reference_metric, abs=1e-9),
    )
    assert result.extras["spearman_x100 news"][0] != pytest.approx(result.metric)
    model = tmp_path / "dyn"
    shutil.copytree(tiny_bert_dynamic, model)
    code, out, err = cli("eval", model, "--reference", tiny_bert_onnx, "--task", "sts", "--data", data)
    assert code == 0, err
    assert "spearman_x100 news" in out and "spearman_x100 few" not in out
    step = json.loads((model / "onnxopt.json").read_text())["steps"][-1]
    assert "spearman_x100 forum" in step and "reference_spearman_x100 forum" in step
