"""The `eval` workflow: output fidelity against a reference model, and the task metric on real data."""

from __future__ import annotations

from pathlib import Path

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate import task_metrics
from onnxopt.evaluate.sts import (
    PADDING_CHECK,
    EvalResult,
    load_sts_pairs,
    output_fidelity,
    padded_batch_agreement,
    sts_spearman_by_genre,
)
from onnxopt.io import limits, model_files
from onnxopt.runtime.selection import runtime_settings

TASKS = ("fidelity", "sts", "classification", "qa", "perplexity")
_NEEDS = {  # task -> (what its --data must be, hint)
    "sts": ("pairs with gold scores", "pass --data path/to/sts-dev.csv"),
    "classification": ("a labelled csv", "pass --data FILE with text and label columns"),
    "qa": ("a SQuAD-format json", "pass --data FILE"),
    "perplexity": ("a text file", "pass --data FILE"),
}
_SEQ_LEN = {"qa": 384}


def evaluate(
    model: Path,
    reference: Path | None,
    task: str = "fidelity",
    data: str | None = None,
    limit: int = 64,
    seq_len: int | None = None,
    text_column: str | None = None,
    record: bool = True,
    label_column: str = "label",
) -> EvalResult:
    if task not in TASKS:
        raise OnnxoptError(f"unknown eval task {task!r}", f"use one of: {', '.join(TASKS)}")
    if limit < 1:
        raise OnnxoptError(
            f"--limit must be at least 1, got {limit}", "64 samples give a stable fidelity figure"
        )
    seq_len = seq_len or _SEQ_LEN.get(task, 128)
    if seq_len < 1:
        raise OnnxoptError(f"--seq-len must be at least 1, got {seq_len}", "128 suits most sentence models")
    if task != "fidelity" and data is None:
        what, hint = _NEEDS[task]
        raise OnnxoptError(f"the {task} task needs {what}", hint)
    ref = model_files.resolve(model)
    limits.check_sequence_length(ref, seq_len)
    result = EvalResult(model=ref.name, reference=str(reference) if reference else None, task=task)
    # Each model runs as `bench --ep auto`/`--tune` saved it (provider and session options), else on CPU.
    models = [model] + ([reference] if reference else [])
    settings = [runtime_settings(ref)] + (
        [runtime_settings(model_files.resolve(reference))] if reference else []
    )
    result.runtime = settings[0].provider
    if task == "fidelity":
        if reference is None:
            raise OnnxoptError(
                "fidelity needs a reference model", "pass --reference DIR (e.g. the fp32 export)"
            )
        samples = load_samples(data, limit, text_column) if data else embedded_samples(limit)
        feeds = TokenizedSamples(
            samples, load_tokenizer(ref.folder), input_types(model_files.load(ref, False)), seq_len
        )
        result.fidelity = output_fidelity(model, reference, feeds, tuple(settings))
    else:
        _task_metric(result, task, Path(data), models, settings, seq_len, text_column, label_column)
    if record and ref.folder is not None and (manifest := ref.manifest) is not None:
        manifest.add_step("eval", **_record(result, data))
        manifest.save(ref.folder)
    return result


def _task_metric(
    result: EvalResult,
    task,
    data: Path,
    models: list[Path],
    settings: list,
    seq_len,
    text_column,
    label_column,
) -> None:
    """The task's metric on the model, and on the reference when there is one, each run with its
    `settings`."""
    if task == "sts":
        pairs = load_sts_pairs(data)
        scores = [
            sts_spearman_by_genre(m, pairs, seq_len, settings=s)
            for m, s in zip(models, settings, strict=True)
        ]
        values = [overall for overall, _ in scores]
        result.metric_name = "spearman_x100"
        # In file order: batches then mix lengths, so most sentences carry padding.
        texts = list(dict.fromkeys(p.first for p in pairs))[:PADDING_CHECK]
        agree = [padded_batch_agreement(m, texts, seq_len, settings=s) for m, s in _pairs(models, settings)]
        result.extras["padded-batch min cosine"] = (agree[0], agree[1] if len(agree) > 1 else None)
        for genre, value in scores[0][1].items():
            reference = scores[1][1][genre] if len(scores) > 1 else None
            result.extras[f"spearman_x100 {genre}"] = (value, reference)
    elif task == "classification":
        rows = task_metrics.load_labelled(data, text_column, label_column)
        values = [
            task_metrics.classification_accuracy(m, rows, seq_len, settings=s)
            for m, s in zip(models, settings, strict=True)
        ]
        result.metric_name = "accuracy_x100"
    elif task == "qa":
        examples = task_metrics.load_squad(data)
        scores = [
            task_metrics.squad_scores(task_metrics.qa_predictions(m, examples, seq_len, settings=s), examples)
            for m, s in zip(models, settings, strict=True)
        ]
        values = [f1 for _, f1 in scores]
        result.metric_name = "f1_x100"
        result.extras["exact_match_x100"] = (scores[0][0], scores[1][0] if len(scores) > 1 else None)
    else:
        texts = task_metrics.load_text(data)
        values = [
            task_metrics.perplexity(m, texts, seq_len, settings=s)
            for m, s in zip(models, settings, strict=True)
        ]
        result.metric_name = "perplexity"
        result.higher_is_better = False
    result.metric = values[0]
    result.reference_metric = values[1] if len(values) > 1 else None


def _record(result: EvalResult, data: str | None) -> dict:
    record: dict = {
        "task": result.task,
        "reference": result.reference,
        "data": data or "embedded corpus",
        "provider": result.runtime,
    }
    if result.fidelity is not None:
        record["fidelity"] = vars(result.fidelity)
    if result.metric is not None:
        record.update(
            metric=result.metric_name,
            value=result.metric,
            reference_value=result.reference_metric,
            drop=result.drop,
        )
        for name, (value, reference) in result.extras.items():
            record[name] = value
            record[f"reference_{name}"] = reference
    return record


def _pairs(models: list, settings: list):
    return zip(models, settings, strict=True)
