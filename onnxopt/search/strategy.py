"""Which trials to run next, and which not to run at all.

Cheap first, and never a point whose cheaper ancestor already breaks the budget: a point's
ancestors are the same pruning un-quantized (its model's parent) and the same quantization at
every lower sparsity (not pruned included). Quantizing adds error and pruning more adds error, so
a point under an ancestor that drops more than the budget is skipped, with the ancestor named.

A point is decided only once all its ancestors are, so the trials that run do not depend on how
many run at once: a search on Ray runs the same trials as one in a single process. Under
`--budget N`, a point still undecided ahead in the order holds its place in the budget, so the
N trials are the first N that a single process would run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from onnxopt.search.points import Point

DONE, FAILED, SKIPPED = "done", "failed", "skipped"


@dataclass
class Outcome:
    status: str  # done, failed or skipped
    drop: float | None = None
    reason: str = ""


def ancestors(points: Iterable[Point]) -> dict[str, list[str]]:
    """Each point's cheaper ancestors (keys), the model's parent first."""
    points = list(points)
    unquantized = {(p.prune_variant, p.sparsity, p.ep_index): p.key for p in points if p.quantize is None}
    by_quant: dict[tuple, list[Point]] = {}
    for p in points:
        by_quant.setdefault((p.quant_variant, p.ep_index), []).append(p)
    found = {}
    for p in points:
        parent = unquantized.get((p.prune_variant, p.sparsity, p.ep_index)) if p.quantize else None
        lower = [
            q.key
            for q in by_quant[(p.quant_variant, p.ep_index)]
            if q.sparsity < p.sparsity and (q.prune_variant in (None, p.prune_variant))
        ]
        found[p.key] = ([parent] if parent and parent != p.key else []) + lower
    return found


@dataclass
class Plan:
    points: list[Point]
    max_drop: float
    budget: int | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.points = sorted(self.points, key=lambda p: p.order)
        self.parents = ancestors(self.points)

    def started(self, key: str) -> None:
        self.running.add(key)

    def finish(self, key: str, outcome: Outcome) -> None:
        self.running.discard(key)
        self.outcomes[key] = outcome

    def _skip_reason(self, point: Point) -> str | None:
        for i, key in enumerate(self.parents[point.key]):
            outcome = self.outcomes[key]
            if outcome.status == SKIPPED:
                return outcome.reason
            if outcome.status == DONE and outcome.drop is not None and outcome.drop > self.max_drop:
                return f"cheaper {key} already drops {outcome.drop:.2f} > {self.max_drop:g}"
            is_parent = i == 0 and point.quantize is not None and point.prune is not None
            if outcome.status == FAILED and is_parent:
                return f"its model's parent {key} failed"
        return None

    def next(self, slots: int) -> tuple[list[Point], list[tuple[Point, str]]]:
        """Up to `slots` points to start now, and the points found not worth running (with why)."""
        ran = sum(o.status in (DONE, FAILED) for o in self.outcomes.values())
        reserved = ran + len(self.running)
        start: list[Point] = []
        skipped: list[tuple[Point, str]] = []
        for point in self.points:
            if point.key in self.outcomes or point.key in self.running:
                continue
            if not all(k in self.outcomes for k in self.parents[point.key]):
                reserved += 1  # undecided: it may run, and holds its place in the budget
                continue
            reason = self._skip_reason(point)
            if reason is not None:
                self.outcomes[point.key] = Outcome(SKIPPED, reason=reason)
                skipped.append((point, reason))
                continue
            if (self.budget is not None and reserved >= self.budget) or len(start) >= slots:
                break
            start.append(point)
            reserved += 1
        return start, skipped

    @property
    def untried(self) -> int:
        return sum(p.key not in self.outcomes for p in self.points)
