"""`bench --plot FILE.png`: latency per model and provider, and latency against accuracy.

matplotlib is imported only here, with the file-only Agg backend (no screen needed).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from onnxopt.errors import OnnxoptError
from onnxopt.io.outputs import write_atomic

_COLORS = {"cpu": "#4C72B0", "openvino": "#DD8452", "cuda": "#55A868"}


@dataclass
class Accuracy:
    """A model's task metric, as `eval` recorded it in the manifest."""

    value: float
    metric: str
    higher_is_better: bool = True


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy."""
    front = []
    for i, (lat, acc) in enumerate(points):
        sign = 1 if higher_is_better else -1
        dominated = any(
            (l2 <= lat and sign * a2 >= sign * acc) and (l2 < lat or sign * a2 > sign * acc)
            for j, (l2, a2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _short(name: str) -> str:
    parts = Path(name).parts
    return (
        "/".join(parts[-2:]) if len(parts) > 1 and parts[-1] == "model.onnx" else parts[-1] if parts else name
    )


def check_path(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise OnnxoptError(f"--plot writes a PNG file, got {path.name!r}", "e.g. --plot latency.png")


def pyplot():
    """matplotlib's pyplot on the Agg backend (files, no display), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    """The figure laid out and written as PNG, whole or not at all; then closed."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def plot(
    timings: Sequence,
    path: Path,
    selected: dict[str, str] | None = None,
    accuracy: dict[str, Accuracy] | None = None,
) -> None:
    """Bars of p50 latency with p50-p99 whiskers, one panel per batch size (the selected provider's
    bar outlined); plus, when accuracy is known for two or more models, p50 at the smallest batch
    against the metric, with the Pareto front drawn."""
    check_path(path)
    plt = pyplot()
    selected = selected or {}
    accuracy = {m: a for m, a in (accuracy or {}).items() if any(t.model == m for t in timings)}
    if accuracy:  # one metric per chart: models evaluated on another task are left out
        metric = next(iter(accuracy.values())).metric
        accuracy = {m: a for m, a in accuracy.items() if a.metric == metric}
    batches = sorted({t.batch for t in timings})
    models = list(dict.fromkeys(t.model for t in timings))
    providers = list(dict.fromkeys(t.provider for t in timings))
    panels = len(batches) + (1 if len(accuracy) >= 2 else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 1.2 + 0.55 * len(models) * len(providers)))
    axes = list(axes) if panels > 1 else [axes]
    for ax, batch in zip(axes, batches, strict=False):
        _latency_panel(ax, timings, batch, models, providers, selected)
    if len(accuracy) >= 2:
        _accuracy_panel(axes[-1], timings, selected, accuracy, batches[0])
    save_png(fig, path)


def _latency_panel(ax, timings, batch: int, models: list, providers: list, selected: dict) -> None:
    from matplotlib.patches import Patch

    height = 0.8 / len(providers)
    for k, provider in enumerate(providers):
        for m, model in enumerate(models):
            row = next(
                (t for t in timings if t.model == model and t.provider == provider and t.batch == batch), None
            )
            if row is None:
                continue
            y = m + (k - (len(providers) - 1) / 2) * height
            is_selected = selected.get(model) == provider
            ax.barh(
                y,
                row.p50_ms,
                height=height * 0.9,
                color=_COLORS.get(provider, "#8172B2"),
                edgecolor="black" if is_selected else "none",
                linewidth=1.5 if is_selected else 0,
            )
            ax.errorbar(
                row.p50_ms, y, xerr=[[0], [row.p99_ms - row.p50_ms]], fmt="none", ecolor="black", capsize=3
            )
            ax.text(row.p99_ms, y, f" {row.p50_ms:.1f}", va="center", fontsize=8)
    ax.set_yticks(range(len(models)), [_short(m) for m in models])
    ax.invert_yaxis()
    ax.set_xlabel("latency, ms (bar p50, whisker to p99)")
    ax.set_title(f"batch {batch}, seq {timings[0].seq}" + ("; outlined: selected" if selected else ""))
    handles = [Patch(color=_COLORS.get(p, "#8172B2"), label=p) for p in providers]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.margins(x=0.15)


def _accuracy_panel(ax, timings, selected, accuracy: dict[str, Accuracy], batch: int) -> None:
    names, points = [], []
    for model, acc in accuracy.items():
        rows = [t for t in timings if t.model == model and t.batch == batch]
        row = next((t for t in rows if t.provider == selected.get(model)), None) or min(
            rows, key=lambda t: t.p50_ms
        )
        names.append(model)
        points.append((row.p50_ms, acc.value))
    higher = next(iter(accuracy.values())).higher_is_better
    front = pareto_front(points, higher)
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#4C72B0", zorder=3)
    # Front points ringed as well as joined: a front of one point has no line to show.
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        "--o",
        color="#C44E52",
        markerfacecolor="none",
        markersize=12,
        zorder=2,
        label="Pareto front",
    )
    for name, (lat, acc) in zip(names, points, strict=True):
        ax.annotate(
            f"{_short(name)}: {acc:.2f}, {lat:.1f} ms",
            (lat, acc),
            textcoords="offset points",
            xytext=(9, 4),
            fontsize=8,
        )
    metric = next(iter(accuracy.values())).metric
    ax.set_xlabel(f"p50 latency at batch {batch}, ms (selected provider)")
    ax.set_ylabel(metric + ("" if higher else " (lower is better)"))
    ax.set_title("latency vs accuracy")
    ax.legend(loc="best", fontsize=8)
    ax.margins(0.2)


def recorded_accuracy(ref) -> Accuracy | None:
    """The last task metric `eval` recorded in the model's manifest, if any."""
    manifest = ref.manifest
    for step in reversed(manifest.steps if manifest else []):
        if step.get("step") == "eval" and step.get("value") is not None:
            metric = str(step.get("metric", "metric"))
            return Accuracy(float(step["value"]), metric, metric != "perplexity")
    return None


def plot_bench(result, models, path: Path) -> None:
    """`bench --plot`: the run's latencies, and accuracy where `eval` recorded it in the manifests."""
    from onnxopt.io import model_files

    refs = [model_files.resolve(m) for m in models]
    accuracy = {ref.name: a for ref in refs if (a := recorded_accuracy(ref)) is not None}
    plot(result.results, path, result.selected, accuracy)
