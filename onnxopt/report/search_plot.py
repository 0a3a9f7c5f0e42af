"""`onnxopt search`'s plot, OUT/pareto.png: every trial's metric against its speedup at the
largest batch (its p50 against the reference's in the same timing run) and against its size, the
Pareto fronts joined, the budget as a line, the best starred. matplotlib only here (Agg backend)."""

from __future__ import annotations

from pathlib import Path

from onnxopt.report.plots import pyplot, save_png

PLOT = "pareto.png"


def plot_search(r, path: Path) -> None:
    plt = pyplot()
    done = [t for t in r.trials if t.status == "done" and r.batch in t.p50_ms]
    everyone = [r.reference, *done]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    panels = (
        (
            lambda t: t.speedup.get(r.batch),
            r.front_latency,
            f"speedup at batch {r.batch} (p50, vs the reference)",
        ),
        (lambda t: (t.size_bytes or 0) / 1e6, r.front_size, "size, MB"),
    )
    for ax, (cost, keys, label) in zip(axes, panels, strict=True):
        _panel(ax, r, [t for t in everyone if cost(t) is not None], cost, keys, label)
    save_png(fig, path)


def _panel(ax, r, trials, cost, keys: list[str], label: str) -> None:
    inside = [t for t in trials if t.within_budget]
    outside = [t for t in trials if not t.within_budget]
    for group, color, name in ((inside, "#4C72B0", "within budget"), (outside, "#BBBBBB", "over budget")):
        ax.scatter([cost(t) for t in group], [t.value for t in group], color=color, label=name, zorder=3)
    by_key = {t.key: t for t in trials}
    front = [by_key[k] for k in keys if k in by_key]
    ax.plot([cost(t) for t in front], [t.value for t in front], "--o", color="#C44E52",
            markerfacecolor="none", markersize=11, zorder=2, label="Pareto front")  # fmt: skip
    for t in front:
        ax.annotate(t.key, (cost(t), t.value), textcoords="offset points", xytext=(7, 4), fontsize=7)
    ref = r.reference
    ax.scatter([cost(ref)], [ref.value], marker="s", color="black", zorder=4, label="reference")
    line = ref.value - r.max_drop if r.higher_is_better else ref.value + r.max_drop
    ax.axhline(line, color="#55A868", linestyle=":", label=f"budget (drop {r.max_drop:g})")
    if r.best is not None and r.best.key in by_key:
        ax.scatter([cost(r.best)], [r.best.value], marker="*", s=220, color="#DD8452", zorder=5, label="best")
    ax.set_xlabel(label)
    ax.set_ylabel(ref.metric + ("" if r.higher_is_better else " (lower is better)"))
    ax.legend(loc="best", fontsize=8)
    ax.margins(0.15)
