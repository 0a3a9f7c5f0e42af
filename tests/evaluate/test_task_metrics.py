"""eval's task metrics on tiny models with heads, checked against PyTorch on the same data."""

import json

import numpy as np
import pytest
import torch

from onnxopt.evaluate.task_metrics import squad_scores
from onnxopt.evaluate.workflow import evaluate
from onnxopt.runtime.generation import target_log_probs
from tests.conftest import assert_clean_error, build_tiny_bert, export_to

TEXTS = [
    "the cat sits",
    "a dog runs in the park",
    "the red car is new",
    "music and book",
    "hello world !",
    "the big train",
    "a small bus",
    "rain and snow at night",
]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    hf = build_tiny_bert(tmp_path_factory.mktemp("hf") / "cls", head="classification", seed=3)
    return hf, export_to(hf, tmp_path_factory.mktemp("onnx") / "cls")


def _torch_predictions(hf, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(hf), AutoModelForSequenceClassification.from_pretrained(hf)
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits.argmax(1).numpy()


def test_classification_accuracy_matches_pytorch(classifier, tmp_path):
    hf, onnx_dir = classifier
    predicted = _torch_predictions(hf, TEXTS)
    labels = ["pos" if i % 3 else "neg" for i in range(len(TEXTS))]  # names, resolved through label2id
    data = tmp_path / "labelled.csv"
    data.write_text(
        "sentence,label\n" + "".join(f"{t},{lab}\n" for t, lab in zip(TEXTS, labels, strict=True))
    )
    want = 100 * np.mean([p == {"neg": 0, "pos": 1}[lab] for p, lab in zip(predicted, labels, strict=True)])
    result = evaluate(onnx_dir, task="classification", data=str(data), record=False)
    assert result.metric_name == "accuracy_x100"
    assert result.metric == pytest.approx(want) and result.drop is None  # no reference, no drop
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("text,y\n" + "".join(f"{t},{p}\n" for t, p in zip(TEXTS, predicted, strict=True)))
    result = evaluate(
        onnx_dir, reference=None, task="classification", data=str(numeric), label_column="y", record=False
    )
    assert result.metric == 100.0


def test_squad_metric_normalizes_answers():
    examples = [
        type("Q", (), {"id": "1", "answers": ["The Cat!"]})(),
        type("Q", (), {"id": "2", "answers": ["red car bus"]})(),
    ]
    em, f1 = squad_scores({"1": "cat", "2": "red car"}, examples)
    assert em == 50.0 and f1 == pytest.approx(100 * (1 + 0.8) / 2)


def test_qa_predictions_are_context_spans(tmp_path, tmp_path_factory, cli):
    hf = build_tiny_bert(tmp_path_factory.mktemp("hf") / "qa", head="qa", seed=1)
    onnx_dir = export_to(hf, tmp_path / "qa")
    context = "the cat sits in the park and the dog runs with a red car at night"
    squad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "a",
                                "question": "who sits ?",
                                "answers": [{"text": "the cat", "answer_start": 0}],
                            },
                            {
                                "id": "b",
                                "question": "what is red ?",
                                "answers": [{"text": "car", "answer_start": 50}],
                            },
                        ],
                    }
                ]
            }
        ]
    }
    data = tmp_path / "squad.json"
    data.write_text(json.dumps(squad))
    code, out, err = cli("eval", onnx_dir, "--reference", onnx_dir, "--task", "qa", "--data", data)
    assert code == 0, err
    step = json.loads((onnx_dir / "onnxopt.json").read_text())["steps"][-1]
    from onnxopt.evaluate.task_metrics import load_squad, qa_predictions

    examples = load_squad(data)
    want = _torch_spans(hf, examples)
    em, f1 = squad_scores(want, examples)
    assert step["metric"] == "f1_x100" and step["value"] == pytest.approx(f1) and step["drop"] == 0
    assert step["exact_match_x100"] == pytest.approx(em) == step["reference_exact_match_x100"]
    predictions = qa_predictions(onnx_dir, examples)
    assert predictions == want and all(p and p in context for p in predictions.values())


def _torch_spans(hf, examples, seq_len=384, max_answer=30):
    """The best answer span per question from PyTorch's logits: start <= end < start + max_answer,
    both in the context."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(hf), AutoModelForQuestionAnswering.from_pretrained(hf)
    spans = {}
    for ex in examples:
        enc = tok(ex.question, ex.context, truncation="only_second", max_length=seq_len,
                  return_offsets_mapping=True, return_tensors="pt")  # fmt: skip
        offsets = enc.pop("offset_mapping")[0].tolist()
        context = [s == 1 for s in enc.sequence_ids(0)]
        with torch.no_grad():
            out = model(**enc)
        start, end = out.start_logits[0].tolist(), out.end_logits[0].tolist()
        best = max(
            (start[i] + end[j], i, j)
            for i in range(len(start))
            for j in range(i, min(i + max_answer, len(end)))
            if context[i] and context[j]
        )
        spans[ex.id] = ex.context[offsets[best[1]][0] : offsets[best[2]][1]]
    return spans


def test_target_log_probs_in_row_chunks_equal_a_whole_float64_log_softmax():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((37, 500)) * 30).astype(np.float32)  # 37 rows: 3 chunks of 16
    targets = rng.integers(0, 500, 37)
    whole = torch.log_softmax(torch.from_numpy(logits).double(), 1)[torch.arange(37), targets].numpy()
    np.testing.assert_allclose(target_log_probs(logits.copy(), targets), whole, rtol=1e-12, atol=1e-9)


def test_perplexity_matches_pytorch(tiny_gpt2_onnx, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "the cat sits in the park . the dog runs with a red car at night . hello world !"
    data = tmp_path / "text.txt"
    data.write_text(text + "\n")
    result = evaluate(
        tiny_gpt2_onnx, reference=None, task="perplexity", data=str(data), seq_len=8, record=False
    )
    hf = json.loads((tiny_gpt2_onnx / "onnxopt.json").read_text())["source"]
    tok, model = AutoTokenizer.from_pretrained(hf), AutoModelForCausalLM.from_pretrained(hf)
    ids = tok(text, return_tensors="pt")["input_ids"][0]
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids) - 1, 8):
            window = ids[i : i + 9]
            logits = model(window[:-1][None]).logits[0]
            nll += torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum").item()
            count += len(window) - 1
    assert result.metric == pytest.approx(np.exp(nll / count), rel=1e-4)
    assert result.metric_name == "perplexity" and not result.higher_is_better


def test_task_errors(cli, tiny_bert_onnx, classifier, tmp_path):
    _, onnx_dir = classifier
    squad = tmp_path / "squad.json"
    squad.write_text(
        json.dumps(
            {
                "data": [
                    {"paragraphs": [{"context": "x", "qas": [{"id": "1", "question": "y", "answers": []}]}]}
                ]
            }
        )
    )
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "qa", "--data", squad)
    assert_clean_error(code, err, "not a question-answering model")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "qa")
    assert_clean_error(code, err, "the qa task needs a SQuAD-format json", "--data")
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"title": "no paragraphs"}]}')
    code, _o, err = cli("eval", onnx_dir, "--task", "qa", "--data", bad)
    assert_clean_error(code, err, "is not SQuAD-format JSON")
    table = tmp_path / "t.csv"
    table.write_text("text,label\nthe cat,maybe\n")
    code, _o, err = cli("eval", onnx_dir, "--task", "classification", "--data", table)
    assert_clean_error(code, err, "label 'maybe'", "neg, pos")
    code, _o, err = cli("eval", onnx_dir, "--task", "classification", "--data", table, "--label-column", "y")
    assert_clean_error(code, err, "has no column 'y'", "text, label")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, _o, err = cli("eval", onnx_dir, "--task", "perplexity", "--data", empty)
    assert_clean_error(code, err, "holds no text")
    code, _o, err = cli("eval", onnx_dir, "--task", "perplexity", "--data", tmp_path / "missing.txt")
    assert_clean_error(code, err, "does not exist")
