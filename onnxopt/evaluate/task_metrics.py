"""Task metrics for models with heads: classification accuracy, SQuAD exact match / F1 (and, in
evaluate/perplexity.py, perplexity).

Each reads its own data format, runs the model on the CPU provider and returns one number; the
`eval` workflow (onnxopt.evaluate.workflow) runs the same metric on the reference for the drop.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.data.samples import clip_text, complete_inputs, input_types, load_tokenizer
from onnxopt.data.textio import read_rows
from onnxopt.errors import OnnxoptError, cut, shorten
from onnxopt.io import model_files
from onnxopt.io.files import MIB, regular_file, size_text
from onnxopt.io.model_info import ModelInfo
from onnxopt.runtime.sessions import make_session

_TEXT_NAMES = ("text", "sentence", "content", "review")
# Files read whole are capped: SQuAD v1.1 train is 30 MB, v2.0 train 42 MB. (Perplexity text is
# streamed in bounded windows: evaluate/perplexity.py.)
SQUAD_LIMIT = 256 * MIB


# What each kind of head must output, and what a model with those outputs is.
_HEADS = {
    "logits": (["logits"], "a classifier or causal LM"),
    "span": (["start_logits", "end_logits"], "a question-answering model"),
}


@dataclass
class HeadRunner:
    session: object
    tokenizer: object
    types: dict
    config: dict


def head_runner(
    model: Path, needs: str, threads: int | None = None, settings=None, tokenizer=None
) -> HeadRunner:
    """The model's session for the outputs `needs` names, with its tokenizer from the `tokenizer`
    loader (load_token_ids where only ids are read; load_tokenizer, looked up at the call, by default)."""
    info = ModelInfo.read(model_files.resolve(model))
    ref, proto = info.ref, info.graph
    outputs = [o.name for o in proto.graph.output]
    wanted, kind = _HEADS[needs]
    if any(w not in outputs for w in wanted):
        raise OnnxoptError(
            f"{ref.name} has outputs {', '.join(outputs)}, not {', '.join(wanted)}: it is not {kind}",
            "export it with the matching --task: text-classification, question-answering or text-generation",
        )
    session = make_session(ref.onnx_path, "cpu", threads, settings=settings)
    return HeadRunner(session, (tokenizer or load_tokenizer)(ref.folder), input_types(proto), info.config)


def _read_capped(path: Path, what: str, hint: str, max_bytes: int) -> str:
    """All the UTF-8 text of a regular file of at most `max_bytes`, for readers that need it at
    once. The read itself stops past the cap, so a file that grew after the check, or whose size
    the system misreports (/proc), is not read unbounded either."""
    regular_file(path, what, hint, max_bytes)
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OnnxoptError(f"{what} {cut(str(path))} is over the {size_text(max_bytes)} onnxopt reads", hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxoptError(f"{what} {cut(str(path))} is not UTF-8 text", "save it as UTF-8") from exc


def run_head(runner: HeadRunner, enc: dict, names: list[str]) -> list[np.ndarray]:
    feed = complete_inputs({k: v for k, v in enc.items() if k in runner.types}, runner.types)
    return runner.session.run(names, feed)


# --- classification ---------------------------------------------------------------------------


def load_labelled(
    path: Path, text_column: str | None, label_column: str
) -> list[tuple[tuple[str, ...], str]]:
    """A csv/tsv with a header: text column(s) and a label column."""
    hint = "give a csv with a header, text and label columns"
    delimiter = "\t" if path.suffix in (".tsv", ".tab") else ","
    with regular_file(path, "labelled data", hint).open(encoding="utf-8", newline="") as f:
        reader = read_rows(f, path, delimiter=delimiter)
        header = next((row for row in reader if row), [])  # blank lines before the header skipped
        texts = [c.strip() for c in text_column.split(",")] if text_column else None
        texts = texts or [next((n for n in _TEXT_NAMES if n in header), "")]
        missing = [c for c in [*texts, label_column] if c not in header]
        if missing:
            raise OnnxoptError(
                f"{cut(str(path))} has no column {shorten(missing[0])}",
                f"its columns are: {', '.join(header[:12]) or '(none)'}; use --text-column / --label-column",
            )
        # As csv.DictReader: a later column of the same name wins, a short row reads "" beyond its end.
        where = {name: i for i, name in enumerate(header)}
        wanted = [where[c] for c in texts], where[label_column]
        rows = []
        for row in reader:
            values = [row[i].strip() if i < len(row) else "" for i in [*wanted[0], wanted[1]]]
            if all(values):
                rows.append((tuple(row[i] for i in wanted[0]), values[-1]))
    if not rows:
        raise OnnxoptError(f"{cut(str(path))} holds no labelled rows", "each row needs text and a label")
    return rows


def _label_index(label: str, config: dict, classes: int) -> int:
    label2id = {str(k).lower(): int(v) for k, v in (config.get("label2id") or {}).items()}
    if label.lower() in label2id:
        return label2id[label.lower()]
    try:
        index = int(float(label))
    except ValueError:
        index = -1
    if not 0 <= index < classes:
        raise OnnxoptError(
            f"label {label!r} is neither a class index below {classes} nor a name in the model's label2id",
            f"the model's labels are: {', '.join(label2id) or ', '.join(map(str, range(classes)))}",
        )
    return index


def classification_accuracy(
    model: Path, rows: list, seq_len: int = 128, batch: int = 32, threads: int | None = None, settings=None
) -> float:
    """Accuracy (x100) of argmax(logits) against the labels."""
    runner = head_runner(model, "logits", threads, settings)
    correct = 0
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        columns = [
            [clip_text(t, seq_len) for t in c] for c in zip(*[texts for texts, _ in chunk], strict=True)
        ]
        enc = runner.tokenizer(
            *columns, padding=True, truncation=True, max_length=seq_len, return_tensors="np"
        )
        logits = run_head(runner, dict(enc), ["logits"])[0]
        if logits.ndim != 2:
            raise OnnxoptError(
                f"logits of shape {logits.shape} are not per-sequence class scores",
                "use a sequence-classification export for --task classification",
            )
        labels = [_label_index(label, runner.config, logits.shape[1]) for _, label in chunk]
        correct += int((logits.argmax(1) == np.array(labels)).sum())
    return 100.0 * correct / len(rows)


# --- question answering (SQuAD v1 format and metric) -------------------------------------------


@dataclass
class QaExample:
    id: str
    question: str
    context: str
    answers: list[str]


def load_squad(path: Path) -> list[QaExample]:
    text = _read_capped(path, "SQuAD data", "give a SQuAD-format .json file (at most 256 MiB)", SQUAD_LIMIT)
    try:
        data = json.loads(text)["data"]
        examples = [
            QaExample(str(qa["id"]), qa["question"], para["context"], [a["text"] for a in qa["answers"]])
            for article in data
            for para in article["paragraphs"]
            for qa in para["qas"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise OnnxoptError(
            f"{path} is not SQuAD-format JSON ({type(exc).__name__}: {exc})",
            'expected {"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers"}]}]}]}',
        ) from exc
    if not examples:
        raise OnnxoptError(f"{path} holds no questions", "each paragraph needs a non-empty qas list")
    return examples


def _normalize(text: str) -> str:
    """SQuAD v1.1 answer normalization: lower case, no punctuation, articles or extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _f1(prediction: str, truth: str) -> float:
    pred, gold = _normalize(prediction).split(), _normalize(truth).split()
    common = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], examples: list[QaExample]) -> tuple[float, float]:
    """(exact match, F1), both x100, best over each question's gold answers."""
    em = f1 = 0.0
    for ex in examples:
        pred = predictions.get(ex.id, "")
        golds = ex.answers or [""]
        em += max(float(_normalize(pred) == _normalize(g)) for g in golds)
        f1 += max(_f1(pred, g) for g in golds)
    return 100 * em / len(examples), 100 * f1 / len(examples)


def qa_predictions(
    model: Path,
    examples: list[QaExample],
    seq_len: int = 384,
    max_answer: int = 30,
    threads: int | None = None,
    settings=None,
) -> dict[str, str]:
    """Best span in the context (start <= end, at most `max_answer` tokens), one window per question."""
    runner = head_runner(model, "span", threads, settings)
    predictions = {}
    for ex in examples:
        # Cut contexts keep their offsets: the answer span is read from the start of ex.context.
        enc = runner.tokenizer(
            clip_text(ex.question, seq_len),
            clip_text(ex.context, seq_len),
            truncation="only_second",
            max_length=seq_len,
            return_offsets_mapping=True,
            return_tensors="np",
        )
        offsets = enc.pop("offset_mapping")[0]
        in_context = np.array([s == 1 for s in enc.sequence_ids(0)])
        start, end = (x[0] for x in run_head(runner, dict(enc), ["start_logits", "end_logits"]))
        start = np.where(in_context, start, -np.inf)
        end = np.where(in_context, end, -np.inf)
        scores = start[:, None] + end[None, :]
        allowed = np.triu(np.ones_like(scores, dtype=bool)) & ~np.triu(
            np.ones_like(scores, dtype=bool), max_answer
        )
        scores = np.where(allowed, scores, -np.inf)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        predictions[ex.id] = ex.context[offsets[i][0] : offsets[j][1]] if np.isfinite(scores[i, j]) else ""
    return predictions
