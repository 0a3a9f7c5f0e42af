"""`onnxopt search`'s tables: what ran, and the Pareto fronts of accuracy against latency and size."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from onnxopt.report.console import out, size
from onnxopt.report.search_plot import PLOT


def _summary(r) -> Table:
    table = Table(title=escape(f"Search of {r.model} -> {r.out}"), show_header=False)
    ref = r.reference
    table.add_row(
        "metric", f"{ref.metric} ({'higher' if r.higher_is_better else 'lower'} is better), {r.task}"
    )
    table.add_row("reference", f"{ref.value:.2f}; " + _latencies(ref.p50_ms))
    table.add_row("budget", f"drop at most {r.max_drop:g}")
    counts = {s: sum(t.status == s for t in r.trials) for s in ("done", "failed", "skipped")}
    text = f"{counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped"
    text += (
        f" of {r.points} points; {r.untried} not tried (budget or time)" if r.untried else f" of {r.points}"
    )
    table.add_row("trials", text + (f"; {r.resumed} found finished in OUT" if r.resumed else ""))
    table.add_row("executor", f"{r.executor}, {r.seconds:.0f} s")
    table.add_row("plot", escape(str(r.out / PLOT)))
    if r.best is not None:
        best = r.best
        table.add_row(
            "best",
            f"{escape(best.key)}: {best.value:.2f} (drop {best.drop:.2f}), "
            f"{best.speedup.get(r.batch, 0):.2f}x at batch {r.batch}, {size(best.size_bytes)} -> "
            f"{escape(str(r.best_folder))} (rebuild: onnxopt run {escape(str(r.best_folder))}/recipe.yaml)",
        )
    else:
        table.add_row("best", "no trial within the budget")
    return table


def _latencies(p50: dict) -> str:
    return ", ".join(f"p50 b{b} {ms:.1f} ms" for b, ms in sorted(p50.items()))


def _front(r, keys: list[str], title: str) -> Table:
    by_key = {t.key: t for t in [r.reference, *r.trials]}
    batches = sorted(r.reference.p50_ms)
    table = Table(title=escape(title))
    for col in ["trial", "metric", "drop", *[f"p50 b{b}" for b in batches], *[f"x b{b}" for b in batches]]:
        table.add_column(col, justify="left" if col == "trial" else "right")
    table.add_column("size", justify="right")
    table.add_column("budget")
    for key in keys:
        t = by_key[key]
        cells = [escape(key + (" (best)" if r.best is not None and key == r.best.key else ""))]
        cells += [f"{t.value:.2f}", f"{t.drop:.2f}"]
        cells += [f"{t.p50_ms[b]:.2f} ms" if b in t.p50_ms else "-" for b in batches]
        cells += [f"{t.speedup[b]:.2f}x" if b in t.speedup else "-" for b in batches]
        cells += [size(t.size_bytes or 0), "within" if t.within_budget else "over"]
        table.add_row(*cells)
    return table


def search_result(r) -> None:
    out().print(_summary(r))
    title = f"Pareto front: {r.reference.metric} vs speedup at batch {r.batch}"
    out().print(_front(r, r.front_latency, title))
    out().print(_front(r, r.front_size, f"Pareto front: {r.reference.metric} vs size"))
    failed = [t for t in r.trials if t.status == "failed"]
    if failed:
        table = Table(title="Failed trials")
        table.add_column("trial")
        table.add_column("why", overflow="fold")
        for t in failed:
            table.add_row(escape(t.key), escape(t.reason))
        out().print(table)
