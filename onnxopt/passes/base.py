"""Pass infrastructure, after onnx-ir's `PassBase.call(model) -> PassResult`.

A pass is a small object with a `name`, a `call(model)` and two declarations, as in onnx-ir:
- `in_place`: it changes the model object it was given and returns that same object;
- `changes_input`: the model object it was given is changed at all.
A functional pass (neither) copies; callers may keep using its input. In place is for a tool that
rewrites the model it is handed anyway (FuseTransformer), where a copy first would hold a model
past 2 GB twice.

A Pipeline is a pass that runs passes in order and records a StepReport per pass (time taken, op
counts before and after, the pass's own details); pipelines nest, and their steps are reported
flattened, in the order they ran.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from onnxopt import memory
from onnxopt.graph_queries.int8_ops import op_histogram


class PassContractError(RuntimeError):
    """A pass returned a model object that contradicts its `in_place` declaration."""


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
    peak_rss_mb: float | None = None  # this process's peak during the pass (onnxopt.memory)

    def op_changes(self) -> dict[str, int]:
        """Op types whose count changed, with the signed difference."""
        names = set(self.ops_before) | set(self.ops_after)
        diff = {n: self.ops_after.get(n, 0) - self.ops_before.get(n, 0) for n in sorted(names)}
        return {n: d for n, d in diff.items() if d}


class Pass(abc.ABC):
    name: str = "pass"
    # Functional by default: the common case, and the safe one for callers that reuse the input.
    in_place: bool = False
    changes_input: bool = False

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult: ...

    def call_owned(self, model: onnx.ModelProto) -> PassResult:
        """`call` for a caller that gives `model` up (a Pipeline's own intermediate, or a model
        the workflow loaded for this run): a pass may rewrite it instead of copying it first."""
        return self(model)

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        result = self.call(model)
        # Object identity only: cheap. Whether a functional pass left its input's contents alone
        # is checked by the tests (serialized before and after), not here.
        if self.in_place and result.model is not model:
            raise PassContractError(f"pass {self.name!r} is declared in place but returned another model")
        if not self.in_place and result.model is model:
            raise PassContractError(f"pass {self.name!r} is declared not in place but returned its input")
        return result


class FunctionalPass(Pass):
    """A pass that leaves its input alone, after onnx-ir's FunctionalPass: `call` copies the input
    once and hands the copy to `apply`, which rewrites it in place and returns it. `original` is
    the caller's model, to read only (Smooth compares the two)."""

    in_place = False
    changes_input = False

    def call(self, model: onnx.ModelProto) -> PassResult:
        return self.apply(copy_model(model), model)

    def call_owned(self, model: onnx.ModelProto) -> PassResult:
        # `apply` reads `original` only before it writes (tests/passes/test_owned.py runs every
        # FunctionalPass both ways and compares): no copy of a model nobody else reads.
        return self.apply(model, model)

    @abc.abstractmethod
    def apply(self, model: onnx.ModelProto, original: onnx.ModelProto) -> PassResult: ...


class InPlacePass(Pass):
    """A pass that rewrites the model it is handed and returns that same object, after onnx-ir's
    InPlacePass: for a model it would otherwise hold twice (FuseTransformer past 2 GB)."""

    in_place = True
    changes_input = True


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy: the one a functional pass makes of its input."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


ProgressCallback = Callable[[str], None]


class Pipeline(Pass):
    """Passes run in order, as one pass. `call` returns the last model and, in
    `details["steps"]`, the StepReport of every pass, nested pipelines' steps flattened."""

    def __init__(self, passes: Sequence[Pass], name: str = "pipeline"):
        self.passes = list(passes)
        self.name = name

    @property
    def in_place(self) -> bool:
        return all(p.in_place for p in self.passes)

    @property
    def changes_input(self) -> bool:
        # Only the first pass sees the caller's object; later ones see what it returned, which is
        # the caller's object again only if it is in place (onnx-ir's Sequential reasons the same).
        first = self.passes[0] if self.passes else None
        return first is not None and (first.in_place or first.changes_input)

    def call(self, model: onnx.ModelProto) -> PassResult:
        model, reports = self.run(model)
        return PassResult(model, any(r.modified for r in reports), {"steps": reports})

    def call_owned(self, model: onnx.ModelProto) -> PassResult:
        model, reports = self.run(model, owned=True)
        return PassResult(model, any(r.modified for r in reports), {"steps": reports})

    def run(
        self, model: onnx.ModelProto, on_step: ProgressCallback | None = None, owned: bool = False
    ) -> tuple[onnx.ModelProto, list[StepReport]]:
        """`owned`: the caller gives `model` up. Either way a model a pass returned anew is the
        pipeline's own, so the passes after it rewrite it rather than copy it: one copy of the
        weights at a time (a 4 GB model was held 3 times over a copying pass, issue 28)."""
        reports: list[StepReport] = []
        for p in self.passes:
            if isinstance(p, Pipeline):
                out, inner = p.run(model, on_step, owned)
                owned, model = owned or out is not model, out
                reports += inner
                continue
            if on_step is not None:
                on_step(p.name)
            before = op_histogram(model)
            start = time.perf_counter()
            memory.start_step()
            try:
                result = p.call_owned(model) if owned else p(model)
            except BaseException:
                memory.step_peak_mb()  # close the step: a failed pass left it open for the next one
                raise
            owned = owned or result.model is not model
            reports.append(
                StepReport(
                    name=p.name,
                    seconds=time.perf_counter() - start,
                    modified=result.modified,
                    ops_before=before,
                    ops_after=op_histogram(result.model),
                    details=result.details,
                    peak_rss_mb=memory.step_peak_mb(),
                )
            )
            model = result.model
        return model, reports
