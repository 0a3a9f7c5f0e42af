"""Accuracy-aware quantization: find the nodes that cost accuracy and keep the fewest of them in fp32.

Sensitivity is measured by keeping one node at a time in fp32 (re-quantizing from the same
calibration ranges, so it is cheap) and measuring how much of the output error goes away on
held-back samples. Then the most sensitive nodes go back to fp32, one by one, until the drop is
within the bound; the best model seen is always kept, bound reached or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxopt.data.sts_pairs import StsPair
from onnxopt.evaluate.sts import sts_score
from onnxopt.passes.base import Pass, PassResult
from onnxopt.runtime.sessions import session_for_model

Quantizer = Callable[[tuple[str, ...]], onnx.ModelProto]
Progress = Callable[[str, int, int], None]


class FidelityDrop:
    """Drop = 100 x (1 - mean cosine) of the first output against fp32, on held-back samples."""

    name = "fidelity"

    def __init__(self, reference: onnx.ModelProto, feeds: Sequence[dict]):
        self.feeds = list(feeds)
        session = session_for_model(reference)
        self.expected = [session.run(None, feed)[0].astype(np.float64).ravel() for feed in self.feeds]

    def __call__(self, model: onnx.ModelProto) -> float:
        session = session_for_model(model)
        cosines = []
        for feed, want in zip(self.feeds, self.expected, strict=True):
            got = session.run(None, feed)[0].astype(np.float64).ravel()
            cosines.append(got @ want / max(np.linalg.norm(got) * np.linalg.norm(want), 1e-30))
        return float(100 * (1 - np.mean(cosines)))


class StsDrop:
    """Drop = fp32 Spearman (x100) minus the model's, on an STS pairs file."""

    name = "sts"

    def __init__(self, reference: onnx.ModelProto, pairs: list[StsPair], tokenizer, types, seq_len: int):
        self.pairs, self.tokenizer, self.types, self.seq_len = pairs, tokenizer, types, seq_len
        self.reference_score = self._score(reference)

    def _score(self, model: onnx.ModelProto) -> float:
        session = session_for_model(model)
        return sts_score(session, self.tokenizer, self.types, self.pairs, self.seq_len)

    def __call__(self, model: onnx.ModelProto) -> float:
        return self.reference_score - self._score(model)


@dataclass
class KeptNode:
    node: str
    op_type: str
    sensitivity: float  # fidelity drop removed by keeping this node alone in fp32
    drop_after: float  # metric drop once this node (and those before it) stay fp32


@dataclass
class FallbackReport:
    metric: str
    max_drop: float
    start_drop: float
    final_drop: float
    reached: bool
    kept_fp32: list[KeptNode] = field(default_factory=list)
    candidates: int = 0

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "max_drop": self.max_drop,
            "start_drop": self.start_drop,
            "final_drop": self.final_drop,
            "reached": self.reached,
            "candidates": self.candidates,
            "kept_fp32": [vars(k) for k in self.kept_fp32],
        }


def search(
    quantize_with: Quantizer,
    candidates: list[tuple[str, str]],
    base_exclude: tuple[str, ...],
    ranker: FidelityDrop,
    metric: Callable[[onnx.ModelProto], float],
    metric_name: str,
    max_drop: float,
    progress: Progress,
) -> tuple[onnx.ModelProto, FallbackReport]:
    model = quantize_with(base_exclude)
    drop = metric(model)
    report = FallbackReport(metric_name, max_drop, drop, drop, drop <= max_drop, candidates=len(candidates))
    if report.reached:
        return model, report
    base_error = ranker(model)
    sensitivity = {}
    for i, (name, _op) in enumerate(candidates, 1):
        progress("rank nodes", i, len(candidates))
        sensitivity[name] = base_error - ranker(quantize_with((*base_exclude, name)))
    ranked = sorted((c for c in candidates if sensitivity[c[0]] > 0), key=lambda c: -sensitivity[c[0]])
    best, best_drop, kept = model, drop, []
    for i, (name, op) in enumerate(ranked, 1):
        progress("fall back", i, len(ranked))
        kept.append(name)
        trial = quantize_with((*base_exclude, *kept))
        trial_drop = metric(trial)
        report.kept_fp32.append(KeptNode(name, op, float(sensitivity[name]), float(trial_drop)))
        if trial_drop < best_drop:
            best, best_drop = trial, trial_drop
        if trial_drop <= max_drop:
            break
    report.final_drop = float(best_drop)
    report.reached = best_drop <= max_drop
    # Only the nodes up to the best model count as kept: later trials were not better.
    cut = next((i for i, k in enumerate(report.kept_fp32, 1) if k.drop_after == best_drop), 0)
    report.kept_fp32 = report.kept_fp32[:cut]
    return best, report


class AccuracyAwareQuantize(Pass):
    """A pass wrapping a quantizer pass factory with the fallback search."""

    def __init__(self, make_quantizer, op_types, exclude, ranker, metric, metric_name, max_drop, progress):
        self.make_quantizer = make_quantizer  # exclude tuple -> quantizer Pass
        self.name = make_quantizer(tuple(exclude)).name + " (accuracy-aware)"
        self.op_types, self.exclude = op_types, tuple(exclude)
        self.ranker, self.metric, self.metric_name = ranker, metric, metric_name
        self.max_drop, self.progress = max_drop, progress
        self.report: FallbackReport | None = None

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxopt.passes.quantize import int8_op_counts

        candidates = [
            (n.name, n.op_type)
            for n in model.graph.node
            if n.op_type in self.op_types and n.name and n.name not in self.exclude
        ]

        def quantize_with(exclude: tuple[str, ...]) -> onnx.ModelProto:
            return self.make_quantizer(exclude)(model).model

        best, self.report = search(
            quantize_with,
            candidates,
            self.exclude,
            self.ranker,
            self.metric,
            self.metric_name,
            self.max_drop,
            self.progress,
        )
        return PassResult(best, True, {"int8_ops": int8_op_counts(best), "fallback": self.report.as_dict()})
