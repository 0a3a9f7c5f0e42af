"""`onnxopt bench DIR [DIR...]`"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .. import modelio, render
from ..errors import OnnxoptError
from ..measure import bench
from ..outputs import write_text_atomic


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
        ..., help="Model folders or .onnx files; speedups are relative to the first."
    ),
    batch: str = typer.Option("1,32", help="Batch sizes, comma separated."),
    seq: int = typer.Option(128, help="Sequence length."),
    threads: int | None = typer.Option(None, help="Intra-op threads (default: onnxruntime's choice)."),
    runs: int = typer.Option(20, help="Timed runs per model and batch size."),
    min_time: float = typer.Option(
        2.0, help="Time each model for at least this many seconds per batch size."
    ),
    warmup: int = typer.Option(2, help="Untimed runs first."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
) -> None:
    """Time models interleaved in one run: p50/p90/p99 latency, throughput, size, speedup."""
    batches = parse_int_list(batch, "--batch")
    refs = [modelio.resolve(m) for m in models]
    with render.progress_bar() as progress:
        timings = bench(
            refs,
            batches,
            seq,
            threads=threads,
            runs=runs,
            warmup=warmup,
            min_seconds=min_time,
            on_progress=lambda done, total: progress("timing", done, total),
        )
    render.bench_tables(timings)
    if json_path is not None:
        payload = {"results": [t.as_dict() for t in timings], "threads": threads}
        write_text_atomic(json_path, json.dumps(payload, indent=2) + "\n")
