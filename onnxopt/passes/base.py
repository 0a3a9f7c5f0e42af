"""Pass infrastructure, after onnx-ir's `PassBase.call(model) -> PassResult`.

A pass is a small object with a `name` and a `call(model)`; a Pipeline runs passes in order and
records a StepReport per pass (time taken, op counts before and after, the pass's own details).
"""

from __future__ import annotations

import abc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepReport:
    name: str
    seconds: float
    modified: bool
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    details: dict[str, Any]

    def op_changes(self) -> dict[str, int]:
        """Op types whose count changed, with the signed difference."""
        names = set(self.ops_before) | set(self.ops_after)
        diff = {n: self.ops_after.get(n, 0) - self.ops_before.get(n, 0) for n in sorted(names)}
        return {n: d for n, d in diff.items() if d}


class Pass(abc.ABC):
    name: str = "pass"

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult: ...

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        return self.call(model)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


ProgressCallback = Callable[[str], None]


class Pipeline:
    def __init__(self, passes: Sequence[Pass]):
        self.passes = list(passes)

    def run(
        self, model: onnx.ModelProto, on_step: ProgressCallback | None = None
    ) -> tuple[onnx.ModelProto, list[StepReport]]:
        reports = []
        for p in self.passes:
            if on_step is not None:
                on_step(p.name)
            before = op_histogram(model)
            start = time.perf_counter()
            result = p(model)
            reports.append(
                StepReport(
                    name=p.name,
                    seconds=time.perf_counter() - start,
                    modified=result.modified,
                    ops_before=before,
                    ops_after=op_histogram(result.model),
                    details=result.details,
                )
            )
            model = result.model
        return model, reports
