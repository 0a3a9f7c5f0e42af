"""Tables of `onnxopt bench`: latency per batch size, provider notes, tuning.

At 80 columns a full row (9 columns and a path) wrapped the model's name over five lines, so
models are named by their shortest unique path tail, and on a narrow terminal p90, first-run and
node placement move out of the table into lines below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from onnxopt.report.console import out, size


def _placement(t) -> str:
    text = ", ".join(f"{p} {n}" for p, n in sorted(t.nodes_by_provider.items(), key=lambda kv: -kv[1]))
    if t.fallback_ops:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(t.fallback_ops.items(), key=lambda kv: -kv[1])[:3])
        text += f" (fell back: {ops})"
    return text or "?"


def labels(models: Sequence[str]) -> dict[str, str]:
    """Each model by the shortest tail of its path that no other model shares (`int8`, not
    `/home/me/work/build/int8`); a model.onnx file by its folder."""
    parts = {m: [p for p in Path(m).parts if p != "model.onnx"] or [m] for m in models}
    found = {}
    for m, names in parts.items():
        for k in range(1, len(names) + 1):
            tail = "/".join(names[-k:])
            if all("/".join(other[-k:]) != tail for o, other in parts.items() if o != m):
                break
        found[m] = tail
    return found


def _wide() -> bool:
    return out().width >= 110


def bench_tables(timings: Sequence, selected: dict | None = None, title_suffix: str = "") -> None:
    """One table per batch size; the fastest row in bold green, each model's selected provider
    marked with *. On a narrow terminal, placement and first-run times follow each table."""
    selected = selected or {}
    names = labels(list(dict.fromkeys(t.model for t in timings)))
    several = len({t.provider for t in timings}) > 1
    wide = _wide()
    for batch in sorted({t.batch for t in timings}):
        rows = [t for t in timings if t.batch == batch]
        providers = ", ".join(dict.fromkeys(t.provider for t in rows))
        table = Table(title=f"Latency in ms, batch {batch}, seq {rows[0].seq}, {providers}{title_suffix}")
        columns = ["model", "provider", "p50", "p90", "p99", "samples/s", "first run", "speedup", "nodes"]
        columns = columns if wide else ["model", "provider", "p50", "p99", "samples/s", "speedup", "size"]
        columns += ["cos vs cpu"] if several else []
        for col in columns:
            table.add_column(
                col, justify="left" if col in ("model", "provider", "nodes") else "right", overflow="fold"
            )
        fastest = min(rows, key=lambda t: t.p50_ms)
        for t in rows:
            chosen = t.model in selected and selected[t.model].provider == t.provider
            table.add_row(
                *_cells(t, names[t.model], chosen, wide, several),
                style="bold green" if t is fastest and len(rows) > 1 else None,
            )
        out().print(table)
        if not wide:
            for t in rows:
                out().print(
                    f"  {escape(names[t.model])} on {t.provider}: nodes {escape(_placement(t))}; "
                    f"first run {t.first_run_ms / 1000:.2f} s"
                )


def _cells(t, name: str, chosen: bool, wide: bool, several: bool) -> list[str]:
    provider = t.provider + (" *" if chosen else "")
    if wide:
        cells = [
            escape(name) + f" ({size(t.size_bytes)})",
            provider,
            f"{t.p50_ms:.1f}",
            f"{t.p90_ms:.1f}",
            f"{t.p99_ms:.1f}",
            f"{t.throughput:.1f}",
            f"{t.first_run_ms / 1000:.2f} s",
            f"{t.speedup:.2f}x",
            escape(_placement(t)),
        ]
    else:
        cells = [
            escape(name),
            provider,
            f"{t.p50_ms:.1f}",
            f"{t.p99_ms:.1f}",
            f"{t.throughput:.1f}",
            f"{t.speedup:.2f}x",
            size(t.size_bytes),
        ]
    if several:
        cells.append("-" if t.min_cosine_vs_cpu is None else f"{t.min_cosine_vs_cpu:.5f}")
    return cells


def provider_notes(unavailable: Sequence, selected: dict, timings: Sequence = ()) -> None:
    routes = dict.fromkeys((t.provider, t.route) for t in timings if getattr(t, "route", ""))
    for provider, route in routes:
        out().print(f"{provider}: ran through the {escape(route)}")
    for u in unavailable:
        out().print(f"[yellow]{u.provider}: unavailable[/] - {escape(u.reason)}")
    for model, s in selected.items():
        where = "saved in its manifest" if s.recorded else "not saved (use --ep auto on a model folder)"
        line = (
            f"selected for {escape(model)}: [bold]{s.provider}[/] "
            f"(* above; p50 {s.p50_ms:.1f} ms at batch {s.batch}; {where})"
        )
        for provider, why in s.passed_over.items():
            line += f"; passed over {provider}: {escape(why)}"
        out().print(line)


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
    out().print(table)


def bench_result(r) -> None:
    """A bench run: tuning (if asked), then the latency tables and the provider notes."""
    if r.generation:
        generation_tables(r.generation)
        return
    for tuned in r.tuning:
        tune_result(tuned)
    chosen = {s.model: s for s in r.selections}
    bench_tables(r.results, chosen)
    provider_notes(r.unavailable, chosen, r.results)


def generation_tables(timings: Sequence) -> None:
    """`bench --generate`: one table per batch size, decode speedups against the first model."""
    names = labels(list(dict.fromkeys(t.model for t in timings)))
    for batch in sorted({t.batch for t in timings}):
        rows = [t for t in timings if t.batch == batch]
        first = rows[0]
        title = (
            f"Generation, batch {batch}, prompt {first.prompt_len}, {first.new_tokens} new tokens, "
            f"{first.provider} ({first.generations} generations each)"
        )
        table = Table(title=title)
        # Short headers: the ten columns fit a 100-column log whole and only a long model name folds
        # (with the long headers every cell wrapped there: "copie|d", "onnxo|pt").
        table.add_column("model", overflow="fold", min_width=10)
        for col in ("TTFT ms", "p50 ms", "p90 ms", "tok/s", "speedup", "RSS MB", "size", "cache", "runtime"):
            table.add_column(col, justify="right", overflow="fold")
        fastest = max(rows, key=lambda t: t.tokens_per_s)
        for t in rows:
            table.add_row(
                escape(names[t.model]),
                f"{t.ttft_ms:.1f}",
                f"{t.tpot_p50_ms:.2f}",
                f"{t.tpot_p90_ms:.2f}",
                f"{t.tokens_per_s:.1f}",
                f"{t.speedup:.2f}x",
                f"{t.rss_mb:.0f}" if t.rss_mb == t.rss_mb else "-",  # NaN: not measured
                size(t.size_bytes),
                t.cache,
                t.runtime,
                style="bold green" if t is fastest and len(rows) > 1 else None,
            )
        out().print(table)
