"""`onnxopt bench DIR [DIR...] [--ep auto|all|cpu,openvino,cuda] [--tune] [--json F] [--plot F.png]`"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.io.outputs import check_output_file, write_text_atomic
from onnxopt.report import plots, render
from onnxopt.runtime import selection
from onnxopt.runtime.measure import bench, parse_providers
from onnxopt.runtime.sessions import SessionSettings
from onnxopt.runtime.tuning import tune


def parse_int_list(spec: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise OnnxoptError(
            f"{option} takes positive integers separated by commas, got {spec!r}", f"e.g. {option} 1,32"
        )
    return values


def command(
    models: list[Path] = typer.Argument(
        ..., help="Model folders or .onnx files; speedups are relative to the first, on the first provider."
    ),
    batch: str = typer.Option("1,32", help="Batch sizes, comma separated."),
    seq: int = typer.Option(128, help="Sequence length."),
    ep: str = typer.Option(
        "cpu",
        "--ep",
        help="Execution providers: cpu, openvino, cuda (comma separated), 'all' (every one, unavailable "
        "ones listed with the reason) or 'auto' (as all, and the fastest is saved in each model's manifest).",
    ),
    tune_settings: bool = typer.Option(
        False, "--tune", help="First search session settings per model and provider; the best are saved."
    ),
    threads: int | None = typer.Option(None, help="Intra-op threads (default: the provider's choice)."),
    runs: int = typer.Option(20, help="Timed runs per model, provider and batch size."),
    min_time: float = typer.Option(
        2.0, help="Time each model for at least this many seconds per batch size."
    ),
    warmup: int = typer.Option(2, help="Untimed runs first."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Also write the numbers to this JSON file ('-': standard output)."
    ),
    plot_path: Path | None = typer.Option(None, "--plot", help="Draw latency (and accuracy) to this PNG."),
) -> None:
    """Time models interleaved on one or more providers: p50/p90/p99, throughput, first-run time,
    node placement, size, speedup; pick the fastest provider per model."""
    # With `--json -` stdout carries the JSON alone (for `| jq`), and the tables go to stderr.
    with render.tables_on_stderr(json_path is not None and str(json_path) == "-"):
        _bench(models, batch, seq, ep, tune_settings, threads, runs, min_time, warmup, json_path, plot_path)


def _bench(models, batch, seq, ep, tune_settings, threads, runs, min_time, warmup, json_path, plot_path):
    batches = parse_int_list(batch, "--batch")
    providers = parse_providers(ep)
    refs = [model_files.resolve(m) for m in models]
    inputs = [r.folder or r.onnx_path for r in refs]
    # Both before the measuring, not after it: an unwritable or hostile path costs no minutes.
    check_output_file(json_path, inputs, "--json")
    check_output_file(plot_path, inputs, "--plot")
    if plot_path is not None:
        plots.check_path(plot_path)
    tuned: dict[str, dict[str, SessionSettings]] = {}
    if tune_settings:
        with render.progress_bar() as progress:
            for ref in refs:
                result = tune(
                    ref,
                    providers,
                    min(batches),
                    seq,
                    threads=threads,
                    on_progress=lambda done, total, r=ref: progress(f"tuning {r.name}", done, total),
                )
                tuned[ref.name] = result.best
                selection.record_tuned(ref, result.best)
                render.tune_result(result)

    def variants(ref: model_files.ModelRef, provider: str) -> list[SessionSettings]:
        if provider in tuned.get(ref.name, {}):
            return [tuned[ref.name][provider]]
        return [selection.saved_settings(ref, provider, threads)]

    with render.progress_bar() as progress:
        report = bench(
            refs,
            batches,
            seq,
            runs=runs,
            warmup=warmup,
            providers=providers,
            min_seconds=min_time,
            variants_for=variants,
            on_progress=lambda done, total: progress("timing", done, total),
        )
    measured = {t.provider for t in report.timings}
    auto = ep.strip().lower() == "auto"
    chosen = selection.select(report.timings) if len(measured) > 1 or auto else {}
    if auto:
        for ref in refs:
            selection.record(ref, chosen[ref.name])
    render.bench_tables(report.timings, chosen)
    render.provider_notes(report.unavailable, chosen)
    if json_path is not None:
        payload = {
            "results": [t.as_dict() for t in report.timings],
            "unavailable": [vars(u) for u in report.unavailable],
            "selected": {model: s.provider for model, s in chosen.items()},
            "threads": threads,
        }
        write_text_atomic(json_path, json.dumps(payload, indent=2) + "\n")
    if plot_path is not None:
        accuracy = {ref.name: a for ref in refs if (a := plots.recorded_accuracy(ref)) is not None}
        plots.plot(report.timings, plot_path, {m: s.provider for m, s in chosen.items()}, accuracy)
