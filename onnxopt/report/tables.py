"""Tables of the commands that make models: export, optimize, quantize, prune, and the
--verify-loading line. Each reads the workflow's result dataclass; nothing is computed here."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from onnxopt.report.console import out, size
from onnxopt.report.steps import step_summary, steps_table


def export_result(r) -> None:
    table = Table(title=f"Exported to {r.out}", show_header=False)
    table.add_row("source", r.source)
    table.add_row("task", r.task)
    table.add_row("opset", str(r.opset))
    for name, diff in r.max_abs_diff.items():
        table.add_row(f"max |onnx - torch| ({name})", f"{diff:.2e}  (atol {r.atol:g})")
    for note in r.notes:
        table.add_row("check", escape(note))
    table.add_row("size", size(r.size_bytes))
    table.add_row("time", f"{r.seconds:.1f} s")
    out().print(table)


def quantize_result(r) -> None:
    table = steps_table(f"Quantized ({r.mode}) to {r.out}")
    for step in r.steps:
        if step.name.startswith("quantize") and r.calibration is not None:
            c = r.calibration
            method = r.options["calibration"]["method"]
            table.add_row(
                "calibrate",
                f"{c.seconds:.1f} s",
                f"{c.samples} samples, {method}, streaming (peak RSS {c.peak_rss_mb:.0f} MB)",
            )
        table.add_row(step.name, f"{step.seconds:.1f} s", step_summary(step))
    out().print(table)
    if "fallback" in r.options:
        fallback_table(r.options["fallback"])
    if "mixed_bits" in r.options:
        mixed_bits_table(r.options["mixed_bits"])
    choice = r.options.get("target_choice")
    if choice:
        out().print(
            f"target auto: kept the {choice['chosen']} layout, run on {choice['provider']} "
            f"(saved as its provider) - {escape(choice['why'])}"
        )
    layout = r.options.get("layout")
    if layout == "qdq":
        out().print(
            "layout: QDQ on onnxruntime's fused graph (its contrib ops stay: onnxruntime reads it; "
            "--target openvino or portable writes QDQ of plain ONNX ops)"
        )
    elif layout and layout != "onnxruntime-cpu":
        out().print(f"layout: {escape(layout)}")
    out().print(f"int8 types: {r.cpu}")
    out().print(
        f"size: {size(r.size_before)} -> {size(r.size_after)} "
        f"({size_change(r.size_before, r.size_after)}), {r.seconds:.1f} s in all"
    )


def size_change(before: int, after: int) -> str:
    """How much smaller a model came out; a larger one says so ("1.0x smaller" once hid a growth)."""
    if after < before:
        return f"{before / max(after, 1):.1f}x smaller"
    return f"{(after - before) / max(before, 1):.0%} larger" if after > before else "the same size"


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
    out().print(table)
    for note in r.notes:
        out().print(f"note: {escape(note)}")
    before, after = r.parameters
    out().print(
        f"parameters: {before:,} -> {after:,} (whole model, read from the written file); "
        f"size: {size(r.size_before)} -> {size(r.size_after)}, {r.seconds:.1f} s in all"
        + ("; shapes unchanged (--mask-only)" if r.mask_only else "")
    )


def _counts(counts: dict) -> str:
    return ", ".join(f"{op} x{n}" for op, n in counts.items())


def optimize_result(r) -> None:
    table = steps_table(f"Optimized to {r.out}")
    for step in r.steps:
        table.add_row(step.name, f"{step.seconds:.1f} s", step_summary(step))
    p = r.parity
    table.add_row(
        "parity",
        "",
        f"{p.samples} samples: max abs diff {p.max_abs_diff:.2e} (atol {r.atol:g}), "
        f"min cosine {p.min_cosine:.6f}",
    )
    out().print(table)


DROP_UNITS = {"sts": "Spearman points", "perplexity": "% perplexity", "fidelity": "100 x (1 - output cosine)"}


def fallback_table(f: dict) -> None:
    unit = DROP_UNITS.get(f["metric"], f["metric"])
    table = Table(title=f"Accuracy-aware fallback: drop in {unit}, bound {f['max_drop']:g}")
    for col in ("kept in fp32", "op", "sensitivity", "drop after"):
        table.add_column(col, justify="left" if col in ("kept in fp32", "op") else "right")
    table.add_row("(all quantized)", "", "", f"{f['start_drop']:.3f}")
    for k in f["kept_fp32"]:
        table.add_row(escape(k["node"]), k["op_type"], f"{k['sensitivity']:.3f}", f"{k['drop_after']:.3f}")
    out().print(table)
    verdict = "reached" if f["reached"] else "NOT reached; the best model found was kept"
    out().print(
        f"bound {verdict}: drop {f['final_drop']:.3f} with {len(f['kept_fp32'])} of "
        f"{f['candidates']} nodes in fp32 ({f['eval_data']})"
    )


def mixed_bits_table(f: dict) -> None:
    """The bisection's trials, then the nodes kept at the wider width with their simulated error."""
    table = Table(title=f"Accuracy-aware widths: drop in {DROP_UNITS[f['metric']]}, bound {f['max_drop']:g}")
    table.add_column(f"nodes in {f['kept_as']}", justify="right")
    table.add_column("drop", justify="right")
    for trial in f["trials"]:
        table.add_row(f"{trial['promoted']} of {f['candidates']}", f"{trial['drop']:.3f}")
    out().print(table)
    verdict = "reached" if f["reached"] else "NOT reached; the best model found was kept"
    names = ", ".join(escape(p["node"]) for p in f["promoted"][:4])
    more = f" and {len(f['promoted']) - 4} more" if len(f["promoted"]) > 4 else ""
    out().print(
        f"bound {verdict}: drop {f['final_drop']:.3f} with {len(f['promoted'])} of {f['candidates']} "
        f"MatMuls in {f['kept_as']}{(': ' + names + more) if names else ''} ({f['eval_data']})"
    )


def verify_result(r) -> None:
    line = (
        f"verified: {r.model_class}.from_pretrained({escape(r.folder)}) ran a sample, "
        f"{r.output} {list(r.shape)}"
    )
    if r.reference is not None:
        line += f"; vs the input model: min cosine {r.min_cosine:.5f}, max abs diff {r.max_abs_diff:.3e}"
        if getattr(r, "top1_agreement", None) is not None:
            line += f", same top-1 on {100 * r.top1_agreement:.1f}% of tokens"
    if getattr(r, "generated", None) is not None:
        line += f"; generate() wrote {r.generated} greedy tokens"
        if r.greedy_agreement is not None:
            line += f", {100 * r.greedy_agreement:.1f}% equal to the input model's"
    out().print(line + f" ({r.seconds:.1f} s)")
