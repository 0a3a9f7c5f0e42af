"""The `eval` workflow: output fidelity against a reference model, and the task metric on real data."""

from __future__ import annotations

from pathlib import Path

from . import modelio
from .datasources import embedded_samples, load_samples
from .errors import OnnxoptError
from .evaluate import EvalResult, load_sts_pairs, output_fidelity, sts_spearman
from .samples import TokenizedSamples, input_types, load_tokenizer

TASKS = ("fidelity", "sts")


def evaluate(
    model: Path,
    reference: Path | None,
    task: str = "fidelity",
    data: str | None = None,
    limit: int = 64,
    seq_len: int = 128,
    text_column: str | None = None,
    record: bool = True,
) -> EvalResult:
    if task not in TASKS:
        raise OnnxoptError(f"unknown eval task {task!r}", f"use one of: {', '.join(TASKS)}")
    if limit < 1:
        raise OnnxoptError(
            f"--limit must be at least 1, got {limit}", "64 samples give a stable fidelity figure"
        )
    ref = modelio.resolve(model)
    result = EvalResult(model=ref.name, reference=str(reference) if reference else None, task=task)
    if task == "fidelity":
        if reference is None:
            raise OnnxoptError(
                "fidelity needs a reference model", "pass --reference DIR (e.g. the fp32 export)"
            )
        samples = load_samples(data, limit, text_column) if data else embedded_samples(limit)
        feeds = TokenizedSamples(
            samples, load_tokenizer(ref.folder), input_types(modelio.load(ref, False)), seq_len
        )
        result.fidelity = output_fidelity(model, reference, feeds)
    else:
        if data is None:
            raise OnnxoptError("the sts task needs pairs with gold scores", "pass --data path/to/sts-dev.csv")
        pairs = load_sts_pairs(Path(data))
        result.metric_name = "spearman_x100"
        result.metric = sts_spearman(model, pairs, seq_len)
        if reference is not None:
            result.reference_metric = sts_spearman(reference, pairs, seq_len)
    if record and ref.folder is not None and (manifest := ref.manifest) is not None:
        manifest.add_step("eval", **_record(result, data))
        manifest.save(ref.folder)
    return result


def _record(result: EvalResult, data: str | None) -> dict:
    record: dict = {"task": result.task, "reference": result.reference, "data": data or "embedded corpus"}
    if result.fidelity is not None:
        record["fidelity"] = vars(result.fidelity)
    if result.metric is not None:
        record.update(
            metric=result.metric_name,
            value=result.metric,
            reference_value=result.reference_metric,
            drop=result.drop,
        )
    return record
