"""Everything the terminal shows: rich tables and progress bars. The only module that imports rich."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

# Piped or logged output (CI) gets a fixed width instead of 80 columns, so wide tables stay legible.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 150)
err_console = Console(stderr=True)


@contextlib.contextmanager
def tables_on_stderr(active: bool = True) -> Iterator[None]:
    """Send tables to stderr while a run's stdout carries machine output (`--json -`)."""
    global console
    kept = console
    if active:
        console = err_console
    try:
        yield
    finally:
        console = kept


def size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def error(message: str) -> None:
    """One line on stderr, no markup surprises, no wrapping."""
    sys.stderr.write(f"onnxopt: error: {message}\n")


@contextlib.contextmanager
def progress_bar(transient: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """Yield a callback(stage, done, total); stages without a total show a spinner."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                for other in tasks.values():
                    task = bar.tasks[other]
                    bar.update(other, completed=task.total or 1, total=task.total or 1)
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        yield update


def export_result(r) -> None:
    table = Table(title=f"Exported to {r.out}", show_header=False)
    table.add_row("source", r.source)
    table.add_row("task", r.task)
    table.add_row("opset", str(r.opset))
    for name, diff in r.max_abs_diff.items():
        table.add_row(f"max |onnx - torch| ({name})", f"{diff:.2e}  (atol {r.atol:g})")
    table.add_row("size", size(r.size_bytes))
    table.add_row("time", f"{r.seconds:.1f} s")
    console.print(table)


def _steps_table(title: str) -> Table:
    table = Table(title=escape(title))
    for col in ("step", "time", "what changed"):
        table.add_column(col)
    return table


def quantize_result(r) -> None:
    table = _steps_table(f"Quantized ({r.mode}) to {r.out}")
    for step in r.steps:
        if step.name.startswith("quantize") and r.calibration is not None:
            c = r.calibration
            method = r.options["calibration"]["method"]
            table.add_row(
                "calibrate",
                f"{c.seconds:.1f} s",
                f"{c.samples} samples, {method}, streaming (peak RSS {c.peak_rss_mb:.0f} MB)",
            )
        table.add_row(step.name, f"{step.seconds:.1f} s", _step_summary(step))
    console.print(table)
    if "fallback" in r.options:
        fallback_table(r.options["fallback"])
    console.print(f"int8 types: {r.cpu}")
    console.print(
        f"size: {size(r.size_before)} -> {size(r.size_after)} "
        f"({r.size_before / max(r.size_after, 1):.1f}x smaller), {r.seconds:.1f} s in all"
    )


def prune_result(r) -> None:
    verb = "Masked" if r.mask_only else "Pruned"
    table = Table(
        title=escape(f"{verb} to {r.out} (sparsity {r.sparsity:g}, {r.samples} calibration samples)")
    )
    # Every linear weight is one multiply-add per token: one column says both.
    for col in ("layer", "block", "kept", "linear params = MACs/token"):
        table.add_column(col, justify="left" if col in ("layer", "block") else "right")
    for layer in r.layers:
        unit = "heads" if layer.kind == "attention" else "neurons"
        change = f"{layer.params_before:,} -> {layer.params_after:,}"
        table.add_row(str(layer.layer), layer.kind, f"{layer.kept}/{layer.units} {unit}", change)
    before, after = r.linear_params
    table.add_row("all", "", "", f"{before:,} -> {after:,} (-{100 * (1 - after / max(before, 1)):.1f}%)")
    console.print(table)
    for note in r.notes:
        console.print(f"note: {escape(note)}")
    before, after = r.parameters
    console.print(
        f"parameters: {before:,} -> {after:,} (whole model, read from the written file); "
        f"size: {size(r.size_before)} -> {size(r.size_after)}, {r.seconds:.1f} s in all"
        + ("; shapes unchanged (--mask-only)" if r.mask_only else "")
    )


def _counts(counts: dict) -> str:
    return ", ".join(f"{op} x{n}" for op, n in counts.items())


def _step_summary(step) -> str:
    d = step.details
    if "skipped" in d:
        return f"skipped: {d['skipped']}"
    if "fused" in d:
        return f"fused {_counts(d['fused'])}" if d["fused"] else "nothing to fuse"
    if "int8_ops" in d:
        text = f"int8 ops: {_counts(d['int8_ops'])}"
        if d.get("dynamic_activation_ops"):
            text += f"; dynamic activation scales for {', '.join(d['dynamic_activation_ops'])}"
        if d.get("dynamic_matmuls"):
            text += f" ({len(d['dynamic_matmuls'])} MatMuls fed by GELU)"
        if d.get("layout") == "onnxruntime-cpu":
            rewrites = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in d.get("rewrites", {}).items())
            text += f"; laid out for the CPU provider's kernels ({rewrites or 'nothing to rewrite'})"
        elif d.get("layout") == "qdq":
            text += "; portable QDQ"
        return text
    if "method" in d:
        return f"{d['method']} shape inference" + (
            f" ({d['fallback_reason']})" if "fallback_reason" in d else ""
        )
    changes = step.op_changes()
    return ", ".join(f"{op} {n:+d}" for op, n in changes.items()) or "-"


def _placement(t) -> str:
    text = ", ".join(f"{p} {n}" for p, n in sorted(t.nodes_by_provider.items(), key=lambda kv: -kv[1]))
    if t.fallback_ops:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(t.fallback_ops.items(), key=lambda kv: -kv[1])[:3])
        text += f" (fell back: {ops})"
    return text or "?"


def bench_tables(timings: Sequence, selected: dict | None = None, title_suffix: str = "") -> None:
    """One table per batch size; the fastest row in bold green, each model's selected provider
    marked with *."""
    selected = selected or {}
    several = len({t.provider for t in timings}) > 1
    for batch in sorted({t.batch for t in timings}):
        rows = [t for t in timings if t.batch == batch]
        providers = ", ".join(dict.fromkeys(t.provider for t in rows))
        table = Table(title=f"Latency in ms, batch {batch}, seq {rows[0].seq}, {providers}{title_suffix}")
        columns = ["model", "provider", "p50", "p90", "p99", "samples/s", "first run", "speedup", "nodes"]
        if several:
            columns.append("cos vs cpu")
        for col in columns:
            table.add_column(
                col,
                justify="left" if col in ("model", "provider", "nodes") else "right",
                overflow="fold" if col in ("model", "nodes") else "ellipsis",
            )
        fastest = min(rows, key=lambda t: t.p50_ms)
        for t in rows:
            style = "bold green" if t is fastest and len(rows) > 1 else None
            chosen = t.model in selected and selected[t.model].provider == t.provider
            cells = [
                escape(t.model) + f" ({size(t.size_bytes)})",
                t.provider + (" *" if chosen else ""),
                f"{t.p50_ms:.1f}",
                f"{t.p90_ms:.1f}",
                f"{t.p99_ms:.1f}",
                f"{t.throughput:.1f}",
                f"{t.first_run_ms / 1000:.2f} s",
                f"{t.speedup:.2f}x",
                escape(_placement(t)),
            ]
            if several:
                cells.append("-" if t.min_cosine_vs_cpu is None else f"{t.min_cosine_vs_cpu:.5f}")
            table.add_row(*cells, style=style)
        console.print(table)


def provider_notes(unavailable: Sequence, selected: dict) -> None:
    for u in unavailable:
        console.print(f"[yellow]{u.provider}: unavailable[/] - {escape(u.reason)}")
    for model, s in selected.items():
        where = "saved in its manifest" if s.recorded else "not saved (use --ep auto on a model folder)"
        line = (
            f"selected for {escape(model)}: [bold]{s.provider}[/] "
            f"(* above; p50 {s.p50_ms:.1f} ms at batch {s.batch}; {where})"
        )
        for provider, why in s.passed_over.items():
            line += f"; passed over {provider}: {escape(why)}"
        console.print(line)


def tune_result(r) -> None:
    table = Table(title=escape(f"Tuning {r.model}, batch {r.timings[0].batch}" if r.timings else r.model))
    for col in ("provider", "settings", "p50 ms", "vs cpu (cos)", "best"):
        table.add_column(
            col, justify="right" if col in ("p50 ms", "vs cpu (cos)") else "left", overflow="fold"
        )
    from onnxopt.runtime.sessions import SessionSettings

    for t in r.timings:
        settings = SessionSettings.from_dict(t.settings)
        best = r.best.get(t.provider) == settings
        table.add_row(
            t.provider,
            escape(settings.describe()),
            f"{t.p50_ms:.1f}",
            "-" if t.min_cosine_vs_cpu is None else f"{t.min_cosine_vs_cpu:.5f}",
            "yes" if best else "",
            style="bold green" if best else None,
        )
    console.print(table)


def summary(s) -> None:
    table = Table(title=escape(s.path), show_header=False)
    if s.source:
        table.add_row("source", f"{s.source} ({s.task})")
    table.add_row("size", size(s.size_bytes))
    table.add_row("parameters", f"{s.parameters:,}")
    table.add_row("IR / opsets", f"IR {s.ir_version}; " + ", ".join(f"{d} {v}" for d, v in s.opsets.items()))
    for kind, infos in (("input", s.inputs), ("output", s.outputs)):
        for info in infos:
            table.add_row(kind, escape(f"{info.name}: {info.dtype}[{', '.join(str(d) for d in info.shape)}]"))
    if s.quantized:
        ops = ", ".join(f"{op} x{n}" for op, n in s.quantized_ops.items())
        table.add_row("quantized", f"yes: {ops}; {s.int8_weight_share:.1%} of parameters in 8 bits")
    else:
        table.add_row("quantized", "no")
    if s.pruned:
        table.add_row("pruned", f"yes: sparsity {s.pruned.get('sparsity', '?')}")
    else:
        table.add_row("pruned", "no")
    if s.steps:
        table.add_row("steps", " -> ".join(s.steps))
    console.print(table)
    ops = Table(title="Operators")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, n in s.op_histogram.items():
        ops.add_row(op, str(n))
    console.print(ops)
    if s.nodes:
        nodes = Table(title="Nodes")
        nodes.add_column("name")
        nodes.add_column("op type")
        for name, op in s.nodes:
            nodes.add_row(escape(name), op)
        console.print(nodes)


def eval_result(r) -> None:
    table = Table(title=escape(f"Evaluation of {r.model}"), show_header=False)
    if r.reference:
        table.add_row("reference", escape(r.reference))
    table.add_row("provider", r.runtime)
    if r.fidelity is not None:
        f = r.fidelity
        table.add_row("samples", str(f.samples))
        table.add_row("output cosine", f"mean {f.mean_cosine:.6f}, min {f.min_cosine:.6f}")
        table.add_row("max abs difference", f"{f.max_abs_diff:.3e}")
    if r.metric is not None:
        table.add_row(r.metric_name, f"{r.metric:.2f}")
        if r.reference_metric is not None:
            table.add_row(f"reference {r.metric_name}", f"{r.reference_metric:.2f}")
            table.add_row("drop" if r.higher_is_better else "increase", f"{r.drop:.2f}")
    for name, (value, reference) in r.extras.items():
        digits = 4 if "cosine" in name else 2
        table.add_row(
            name,
            f"{value:.{digits}f}"
            + (
                f" (reference {reference:.{digits}f}, {value - reference:+.{digits}f})"
                if reference is not None
                else ""
            ),
        )
    console.print(table)


def optimize_result(r) -> None:
    table = _steps_table(f"Optimized to {r.out}")
    for step in r.steps:
        table.add_row(step.name, f"{step.seconds:.1f} s", _step_summary(step))
    p = r.parity
    table.add_row(
        "parity",
        "",
        f"{p.samples} samples: max abs diff {p.max_abs_diff:.2e} (atol {r.atol:g}), "
        f"min cosine {p.min_cosine:.6f}",
    )
    console.print(table)


def fallback_table(f: dict) -> None:
    unit = "Spearman points" if f["metric"] == "sts" else "100 x (1 - output cosine)"
    table = Table(title=f"Accuracy-aware fallback: drop in {unit}, bound {f['max_drop']:g}")
    for col in ("kept in fp32", "op", "sensitivity", "drop after"):
        table.add_column(col, justify="left" if col in ("kept in fp32", "op") else "right")
    table.add_row("(all quantized)", "", "", f"{f['start_drop']:.3f}")
    for k in f["kept_fp32"]:
        table.add_row(escape(k["node"]), k["op_type"], f"{k['sensitivity']:.3f}", f"{k['drop_after']:.3f}")
    console.print(table)
    verdict = "reached" if f["reached"] else "NOT reached; the best model found was kept"
    console.print(
        f"bound {verdict}: drop {f['final_drop']:.3f} with {len(f['kept_fp32'])} of "
        f"{f['candidates']} nodes in fp32 ({f['eval_data']})"
    )


def verify_result(r) -> None:
    line = (
        f"verified: {r.model_class}.from_pretrained({escape(r.folder)}) ran a sample, "
        f"{r.output} {list(r.shape)}"
    )
    if r.reference is not None:
        line += f"; vs the input model: min cosine {r.min_cosine:.5f}, max abs diff {r.max_abs_diff:.3e}"
    console.print(line + f" ({r.seconds:.1f} s)")


def recipe_result(r) -> None:
    steps = _steps_table(f"Recipe {r.recipe} -> {r.out}")
    for o in r.steps:
        steps.add_row(o.name, f"{o.seconds:.1f} s", escape(o.summary), style="dim" if o.skipped else None)
    console.print(steps)
    batches = sorted({b for m in r.models for b in m.p50_ms})
    table = Table(title="Models made by the recipe")
    for col in (
        ["step", "size", "metric", "drop"]
        + [f"p50 b{b}" for b in batches]
        + [f"speedup b{b}" for b in batches]
    ):
        table.add_column(col, justify="left" if col == "step" else "right")
    for m in r.models:
        cells = [
            escape(m.step),
            size(m.size_bytes),
            "-" if m.value is None else f"{m.metric} {m.value:.2f}",
            "-" if m.drop is None else f"{m.drop:.2f}",
        ]
        cells += [f"{m.p50_ms[b]:.1f} ms" if b in m.p50_ms else "-" for b in batches]
        cells += [f"{m.speedup[b]:.2f}x" if b in m.speedup else "-" for b in batches]
        table.add_row(*cells)
    console.print(table)
