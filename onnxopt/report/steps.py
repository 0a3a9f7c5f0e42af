"""One line per pass step: what it changed, in words (never a Python dict), and what it left
alone and why ("smoothed 13, skipped 1: last_hidden_state feeds no weight")."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table


def steps_table(title: str) -> Table:
    table = Table(title=escape(title))
    for col in ("step", "time", "what changed"):
        table.add_column(col, overflow="fold")
    return table


def counts(found: dict) -> str:
    return ", ".join(f"{op} x{n}" for op, n in found.items())


def skipped(reasons: dict) -> str:
    """`skipped 2 (a: why; b: why)`, the first three named."""
    if not reasons:
        return ""
    named = "; ".join(f"{name}: {why}" for name, why in list(reasons.items())[:3])
    more = f"; {len(reasons) - 3} more" if len(reasons) > 3 else ""
    return f"skipped {len(reasons)} ({named}{more})"


def step_summary(step) -> str:
    d = step.details
    parts = []
    if "fused" in d:
        parts.append(f"fused {counts(d['fused'])}" if d["fused"] else "nothing to fuse")
    if "smoothed" in d:
        parts.append(f"smoothed {len(d['smoothed'])}")
    if "int8_ops" in d:
        parts.append(_int8(d))
    if "method" in d:
        parts.append(
            f"{d['method']} shape inference"
            + (f" ({d['fallback_reason']})" if "fallback_reason" in d else "")
        )
    if "rewrites" in d:
        done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in d["rewrites"].items())
        parts.append(f"laid out for the CPU provider's kernels ({done or 'nothing to rewrite'})")
    if d.get("skipped") and "method" not in d:  # shape inference says its fallback reason above
        parts.append(skipped(d["skipped"]) if isinstance(d["skipped"], dict) else f"skipped: {d['skipped']}")
    if not parts:
        changes = step.op_changes()
        parts.append(", ".join(f"{op} {n:+d}" for op, n in changes.items()) or "-")
    return "; ".join(parts)


def _int8(d: dict) -> str:
    text = f"int8 ops: {counts(d['int8_ops'])}"
    if d.get("dynamic_activation_ops"):
        text += f"; dynamic activation scales for {', '.join(d['dynamic_activation_ops'])}"
    if d.get("dynamic_matmuls"):
        text += f" ({len(d['dynamic_matmuls'])} MatMuls fed by GELU)"
    return text
