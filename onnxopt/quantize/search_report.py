"""The one report of both accuracy searches: the int8 fallback (fallback.py: nodes kept fp32) and
the weight-only mixed widths (mixed_bits.py: nodes widened to 8 bits or fp32)."""

from __future__ import annotations

from dataclasses import dataclass, field

FALLBACK, MIXED_BITS = "fallback", "mixed_bits"


@dataclass
class SearchReport:
    search: str  # FALLBACK or MIXED_BITS: the manifest key it is recorded under
    metric: str
    max_drop: float
    start_drop: float
    final_drop: float
    reached: bool
    candidates: int = 0
    kept_as: str = "fp32"  # the width the kept nodes have
    # fallback: node, op_type, sensitivity (fidelity drop removed alone), drop_after (the metric
    # once it and those before it stay fp32); mixed bits: node, op_type, error at the low width.
    kept: list[dict] = field(default_factory=list)
    trials: list[dict] = field(default_factory=list)  # mixed bits: promoted count, measured drop
    roles: list[dict] = field(default_factory=list)  # mixed bits: role, nodes, drop widened alone

    def as_dict(self) -> dict:
        measured = {
            "metric": self.metric,
            "max_drop": self.max_drop,
            "start_drop": self.start_drop,
            "final_drop": self.final_drop,
            "reached": self.reached,
        }
        if self.search == FALLBACK:
            return {**measured, "candidates": self.candidates, "kept_fp32": list(self.kept)}
        return {
            **measured,
            "kept_as": self.kept_as,
            "candidates": self.candidates,
            "promoted": list(self.kept),
            "trials": self.trials,
            "roles": self.roles,
        }
