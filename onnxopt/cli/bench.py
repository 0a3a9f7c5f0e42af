"""`onnxopt bench DIR [DIR ...] [--ep cpu|openvino|cuda|all|auto] [--tune] [--json F] [--plot F.png]`"""

from __future__ import annotations

import inspect
from pathlib import Path

import typer

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.runtime.config import BenchConfig

MODELS = inspect.Parameter(
    "models",
    common.KW,
    annotation=list[Path],
    default=typer.Argument(
        ...,
        metavar="MODEL...",
        help="Model folders or .onnx files; speedups are against the first, on the first provider.",
    ),
)


def run(config: BenchConfig, models: list[Path], json_path: Path | None) -> None:
    common.check_json(json_path, [common.existing(m) for m in models])
    with common.progress(f"bench {len(models)} model{'s' * (len(models) > 1)}") as progress:
        from onnxopt.runtime.bench import run_bench

        result = run_bench(models, config, on_progress=progress)
    from onnxopt.report import bench_tables, plots

    common.finish(result, json_path, bench_tables.bench_result)
    if config.plot is not None:
        plots.plot_bench(result, models, config.plot)


command = make_command(
    BenchConfig,
    run,
    "Time models interleaved on one or more providers: p50/p90/p99, throughput, first-run time, node "
    "placement, size, speedup; pick the fastest provider per model.",
    arguments=[MODELS],
    extras=[common.JSON],
)
