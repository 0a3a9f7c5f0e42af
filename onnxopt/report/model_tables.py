"""Tables of the commands that read models: inspect, eval, and a recipe's run."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from onnxopt.report.console import out, size
from onnxopt.report.steps import steps_table


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
        table.add_row("quantized", f"yes: {ops}; {s.int8_weight_share:.1%} of parameters in 8 bits or fewer")
        for g in s.fp32_kept:
            more = ", ..." if g.tensors > len(g.examples) else ""
            nodes = f": {', '.join(g.examples)}{more}" if g.examples else ""
            text = f"{g.parameters:,} parameters in {g.tensors} tensors, {g.kind}{nodes} ({g.why})"
            table.add_row("fp32 kept", escape(text))
    else:
        table.add_row("quantized", "no")
    if s.pruned:
        table.add_row("pruned", f"yes: sparsity {s.pruned.get('sparsity', '?')}")
    else:
        table.add_row("pruned", "no")
    if s.steps:
        table.add_row("steps", " -> ".join(s.steps))
    out().print(table)
    ops = Table(title="Operators")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, n in s.op_histogram.items():
        ops.add_row(op, str(n))
    out().print(ops)
    if s.nodes:
        nodes = Table(title="Nodes")
        nodes.add_column("name")
        nodes.add_column("op type")
        for name, op in s.nodes:
            nodes.add_row(escape(name), op)
        out().print(nodes)


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
    out().print(table)


def recipe_result(r) -> None:
    steps = steps_table(f"Recipe {r.recipe} -> {r.out}")
    for o in r.steps:
        steps.add_row(o.name, f"{o.seconds:.1f} s", escape(o.summary), style="dim" if o.skipped else None)
    out().print(steps)
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
    out().print(table)
