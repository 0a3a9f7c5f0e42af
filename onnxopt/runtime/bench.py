"""The `bench` workflow: optional tuning, interleaved timing of every model on every provider,
and the provider chosen per model by measurement (saved in its manifest with --ep auto).

Here rather than in the CLI so recipes reach all of it: the command only renders the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from onnxopt.errors import OnnxoptError, cut
from onnxopt.io import model_files
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.outputs import check_output_file
from onnxopt.options import config_from
from onnxopt.runtime import selection
from onnxopt.runtime.config import BenchConfig
from onnxopt.runtime.generation_bench import GenerationTiming, bench_generation
from onnxopt.runtime.measure import Timing, Unavailable, bench
from onnxopt.runtime.seq2seq_bench import bench_seq2seq_generation
from onnxopt.runtime.sessions import SessionSettings
from onnxopt.runtime.tuning import TuneResult, tune

Progress = Callable[[str, int, int], None]


@dataclass
class BenchResult:
    results: list[Timing]
    unavailable: list[Unavailable]
    selected: dict[str, str]  # model -> the provider chosen for it (several providers, or --ep auto)
    threads: int | None
    selections: list[selection.Selection] = field(default_factory=list)
    tuning: list[TuneResult] = field(default_factory=list)
    generation: list[GenerationTiming] = field(default_factory=list)  # with --generate


def run_bench(
    models: Sequence[Path], config: BenchConfig | None = None, on_progress: Progress | None = None, **options
) -> BenchResult:
    config = config_from(BenchConfig, config, options)
    progress = on_progress or (lambda _stage, _done, _total: None)
    infos = [ModelInfo.read(Path(m)) for m in models]  # each kind asked once, lazily
    if config.generate and any(info.in_parts for info in infos):
        return _seq2seq_generation(infos, config, progress)
    refs = [model_files.resolve(m) for m in models]
    # Before the measuring, not after it: an unwritable or hostile path costs no minutes.
    check_output_file(config.plot, [r.folder or r.onnx_path for r in refs], "--plot")
    if config.generate:
        return _generation(refs, config, progress)
    tuning = [_tuned(ref, config, progress) for ref in refs] if config.tune else []
    tuned = {t.model: t.best for t in tuning}

    def variants(ref: model_files.ModelRef, provider: str) -> list[SessionSettings]:
        if provider in tuned.get(ref.name, {}):
            return [tuned[ref.name][provider]]
        return [selection.saved_settings(ref, provider, config.threads)]

    report = bench(
        refs,
        config.batch,
        config.seq_len,
        runs=config.runs,
        warmup=config.warmup,
        providers=config.providers,
        min_seconds=config.min_time,
        variants_for=variants,
        on_progress=lambda done, total: progress("timing", done, total),
    )
    measured = {t.provider for t in report.timings}
    chosen = selection.select(report.timings) if len(measured) > 1 or config.select else {}
    if config.select:
        for ref in refs:
            selection.record(ref, chosen[ref.name])
    selected = {model: s.provider for model, s in chosen.items()}
    return BenchResult(
        report.timings, report.unavailable, selected, config.threads, list(chosen.values()), tuning
    )


def _generation(refs, config: BenchConfig, progress: Progress, timer=None) -> BenchResult:
    """--generate: each model on the first provider asked for, with its saved settings; `timer`
    is bench_seq2seq_generation (encoder-decoders in parts), else bench_generation (decoders)
    through the runtime asked for."""
    provider = config.providers[0]
    timer = timer or partial(bench_generation, runtime=config.runtime)
    timings = timer(
        refs,
        config.batch,
        config.prompt_len,
        config.new_tokens,
        lambda ref: selection.saved_settings(ref, provider, config.threads),
        runs=config.runs,
        min_seconds=config.min_time,
        on_progress=lambda done, total: progress("generating", done, total),
    )
    return BenchResult([], [], {}, config.threads, generation=timings)


def _seq2seq_generation(infos: list[ModelInfo], config: BenchConfig, progress: Progress) -> BenchResult:
    """--generate of encoder-decoders in parts; every model must be one (their timings compare)."""
    folders = [info.path for info in infos]
    mixed = [str(info.path) for info in infos if not info.in_parts]
    if mixed:
        raise OnnxoptError(
            f"bench --generate compares encoder-decoders with encoder-decoders; {cut(mixed[0])} is not one",
            "bench decoders and encoder-decoders in separate runs",
        )
    if config.runtime == "genai":
        raise OnnxoptError(
            f"--runtime genai times decoders; {cut(str(folders[0]))} is an encoder-decoder in parts",
            "bench it with --runtime onnxopt",
        )
    check_output_file(config.plot, folders, "--plot")
    return _generation(folders, config, progress, bench_seq2seq_generation)


def _tuned(ref: model_files.ModelRef, config: BenchConfig, progress: Progress) -> TuneResult:
    result = tune(
        ref,
        config.providers,
        min(config.batch),
        config.seq_len,
        threads=config.threads,
        on_progress=lambda done, total: progress(f"tuning {ref.name}", done, total),
    )
    selection.record_tuned(ref, result.best)
    return result
