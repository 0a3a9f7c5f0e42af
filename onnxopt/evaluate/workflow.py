"""The `eval` workflow: output fidelity against a reference model, or a task's metric on real
data for the model and its reference alike, recorded in the model's manifest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.data.sts_pairs import load_sts_pairs
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate import generation, perplexity, seq2seq_metrics, task_metrics
from onnxopt.evaluate.config import EvalConfig
from onnxopt.evaluate.fidelity import Fidelity, output_fidelity
from onnxopt.evaluate.sts import PADDING_CHECK, padded_batch_agreement, sts_spearman_by_genre
from onnxopt.io import limits, model_files
from onnxopt.io.model_info import ModelInfo
from onnxopt.options import config_from
from onnxopt.runtime.selection import runtime_settings
from onnxopt.runtime.sessions import SessionSettings


@dataclass
class EvalResult:
    model: str
    reference: str | None
    task: str
    fidelity: Fidelity | None = None
    metric_name: str | None = None
    metric: float | None = None
    reference_metric: float | None = None
    higher_is_better: bool = True
    # Further figures of the same task (SQuAD's exact match beside F1): name -> (value, reference).
    extras: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    runtime: str = "cpu"  # the execution provider the model ran on

    @property
    def drop(self) -> float | None:
        """How much worse than the reference (positive = worse), whichever way the metric points."""
        if self.metric is None or self.reference_metric is None:
            return None
        diff = self.reference_metric - self.metric
        return diff if self.higher_is_better else -diff


Progress = Callable[[str, int, int], None]


def evaluate(
    model: Path,
    config: EvalConfig | None = None,
    record: bool = True,
    on_progress: Progress | None = None,
    **options,
) -> EvalResult:
    """The metric of `config.task` on `model` (and on `config.reference`, for the drop)."""
    config = config_from(EvalConfig, config, options)
    progress = on_progress or (lambda _stage, _done, _total: None)
    reference = Path(config.reference) if config.reference else None
    # The kind asked once: the model's info (and its reference's) is passed down from here.
    info = ModelInfo.read(Path(model))
    other = ModelInfo.read(reference) if reference is not None else None
    if info.in_parts:  # an encoder-decoder: generation or fidelity (evaluate/seq2seq_metrics)
        seq2seq_metrics.check_parts_eval(Path(model), other, config.task)
    ref = info.ref  # its encoder's for a folder in parts
    limits.check_sequence_length(info, config.tokens)
    if info.in_parts:
        limits.check_sequence_length(info, config.new_tokens, "--new-tokens")
    result = EvalResult(
        model=ref.name, reference=config.reference and str(config.reference), task=config.task
    )

    # Each model runs on --ep when given, else as `bench --ep auto`/`--tune` saved it (provider and
    # session options), else on CPU.
    def settings_of(r):
        return SessionSettings(provider=config.ep) if config.ep else runtime_settings(r)

    runs = [(Path(model), settings_of(ref))]
    if other is not None:
        runs.append((reference, settings_of(other.ref)))
    result.runtime = runs[0][1].provider
    _check_first(runs, config, info)
    if config.task == "fidelity":
        result.fidelity = _fidelity(info, runs, config)
    elif config.task == "perplexity":
        _perplexity(result, Path(config.data), runs, config, progress)
    elif config.task == "generation":
        _generation(result, Path(config.data) if config.data else None, runs, config, info.in_parts)
    else:
        TASKS[config.task](result, Path(config.data) if config.data else None, runs, config)
    if record and ref.folder is not None and (manifest := ref.manifest) is not None:
        manifest.add_step("eval", **_record(result, config.data))
        manifest.save(ref.folder)
    return result


def _fidelity(info: ModelInfo, runs, config: EvalConfig) -> Fidelity:
    if len(runs) < 2:
        raise OnnxoptError("fidelity needs a reference model", "pass --reference DIR (e.g. the fp32 export)")
    samples = load_samples(config.data, config.samples, config.text_column) if config.data else None
    samples = samples or embedded_samples(config.samples)
    if info.in_parts:
        texts = [s if isinstance(s, str) else s[0] for s in samples]
        return seq2seq_metrics.parts_fidelity(
            runs[0][0], runs[1][0], texts, config.tokens, tuple(s for _, s in runs)
        )
    feeds = TokenizedSamples(samples, load_tokenizer(info.ref.folder), input_types(info.graph), config.tokens)
    return output_fidelity(runs[0][0], runs[1][0], feeds, tuple(s for _, s in runs))


def _sts(result: EvalResult, data: Path, runs, config: EvalConfig) -> None:
    pairs = load_sts_pairs(data)
    scores = [sts_spearman_by_genre(m, pairs, config.tokens, settings=s) for m, s in runs]
    _set(result, "spearman_x100", [overall for overall, _ in scores])
    # In file order: batches then mix lengths, so most sentences carry padding.
    texts = list(dict.fromkeys(p.first for p in pairs))[:PADDING_CHECK]
    agree = [padded_batch_agreement(m, texts, config.tokens, settings=s) for m, s in runs]
    result.extras["padded-batch min cosine"] = (agree[0], agree[1] if len(agree) > 1 else None)
    for genre, value in scores[0][1].items():
        result.extras[f"spearman_x100 {genre}"] = (value, scores[1][1][genre] if len(scores) > 1 else None)


def _classification(result: EvalResult, data: Path, runs, config: EvalConfig) -> None:
    rows = task_metrics.load_labelled(data, config.text_column, config.label_column)
    values = [task_metrics.classification_accuracy(m, rows, config.tokens, settings=s) for m, s in runs]
    _set(result, "accuracy_x100", values)


def _qa(result: EvalResult, data: Path, runs, config: EvalConfig) -> None:
    examples = task_metrics.load_squad(data)
    scores = [
        task_metrics.squad_scores(
            task_metrics.qa_predictions(m, examples, config.tokens, settings=s), examples
        )
        for m, s in runs
    ]
    _set(result, "f1_x100", [f1 for _, f1 in scores])
    result.extras["exact_match_x100"] = (scores[0][0], scores[1][0] if len(scores) > 1 else None)


def _check_first(runs, config: EvalConfig, info: ModelInfo) -> None:
    """What refuses generation or perplexity, from the files alone: before any prompt is read or
    session made (`--new-tokens 1000000000` was refused only after 19 s)."""
    if config.task == "generation" and not info.in_parts:
        for model, _settings in runs:
            generation.check_greedy(model, config.new_tokens, config.tokens)
    if config.task == "perplexity":
        perplexity.check_text(Path(config.data))
        for model, _settings in runs:
            perplexity.check_model(model, config.tokens)


def _perplexity(result: EvalResult, data: Path, runs, config: EvalConfig, progress: Progress) -> None:
    """The first --limit windows of --seq-len tokens of the text (all of it without), for each model."""
    found = []
    for model, settings in runs:
        stage = f"perplexity {model_files.resolve(model).name}"
        on_window = _counted(progress, stage, config.limit or 0)  # 0: a total not known
        on_window(0)
        found.append(perplexity.perplexity(model, data, config.tokens, config.limit, settings, on_window))
    _set(result, "perplexity", [f.value for f in found])
    result.extras["tokens scored"] = (float(found[0].tokens), float(found[1].tokens) if found[1:] else None)
    result.higher_is_better = False


def _counted(progress: Progress, stage: str, total: int) -> Callable[[int], None]:
    return lambda done: progress(stage, done, total)


def _generation(result: EvalResult, data: Path | None, runs, config: EvalConfig, in_parts: bool) -> None:
    prompts = load_samples(str(data), config.samples) if data else embedded_samples(config.samples, clip=True)
    prompts = [p if isinstance(p, str) else p[0] for p in prompts]
    greedy = seq2seq_metrics.greedy_tokens if in_parts else generation.greedy_tokens
    tokens = [greedy(m, prompts, config.new_tokens, config.tokens, settings=s) for m, s in runs]
    _set(result, "greedy_agreement_x100", [generation.greedy_agreement(tokens[0], tokens[1]), 100.0])
    result.extras["prompts x new tokens"] = (float(len(prompts) * config.new_tokens), None)


TASKS = {
    "sts": _sts,
    "classification": _classification,
    "qa": _qa,
}


def _set(result: EvalResult, name: str, values: list[float]) -> None:
    result.metric_name = name
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
