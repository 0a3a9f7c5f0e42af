"""Accuracy-aware quantization: find the nodes that cost accuracy and keep the fewest of them in fp32.

Sensitivity is measured by keeping one node at a time in fp32 (re-quantizing from the same
calibration ranges, so it is cheap) and measuring how much of the output error goes away on
held-back samples. Then the most sensitive nodes go back to fp32, one by one, until the drop is
within the bound; the best model seen is always kept, bound reached or not.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from onnxopt.graph_queries.int8_ops import int8_op_counts
from onnxopt.passes.base import Pass, PassResult
from onnxopt.quantize.drop_metrics import FidelityDrop
from onnxopt.quantize.search_report import FALLBACK, SearchReport

Quantizer = Callable[[tuple[str, ...]], onnx.ModelProto]
Progress = Callable[[str, int, int], None]


def search(
    quantize_with: Quantizer,
    candidates: list[tuple[str, str]],
    base_exclude: tuple[str, ...],
    ranker: FidelityDrop,
    metric: Callable[[onnx.ModelProto], float],
    metric_name: str,
    max_drop: float,
    progress: Progress,
) -> tuple[onnx.ModelProto, SearchReport]:
    model = quantize_with(base_exclude)
    drop = metric(model)
    report = SearchReport(FALLBACK, metric_name, max_drop, drop, drop, drop <= max_drop, len(candidates))
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
        report.kept.append(
            {
                "node": name,
                "op_type": op,
                "sensitivity": float(sensitivity[name]),
                "drop_after": float(trial_drop),
            }
        )
        if trial_drop < best_drop:
            best, best_drop = trial, trial_drop
        if trial_drop <= max_drop:
            break
    report.final_drop = float(best_drop)
    report.reached = best_drop <= max_drop
    # Only the nodes up to the best model count as kept: later trials were not better.
    cut = next((i for i, k in enumerate(report.kept, 1) if k["drop_after"] == best_drop), 0)
    report.kept = report.kept[:cut]
    return best, report


class AccuracyAwareQuantize(Pass):
    """A pass wrapping a quantizer pass factory with the fallback search."""

    def __init__(self, make_quantizer, op_types, exclude, ranker, metric, metric_name, max_drop, progress):
        self.make_quantizer = make_quantizer  # exclude tuple -> quantizer Pass
        self.name = make_quantizer(tuple(exclude)).name + " (accuracy-aware)"
        self.op_types, self.exclude = op_types, tuple(exclude)
        self.ranker, self.metric, self.metric_name = ranker, metric, metric_name
        self.max_drop, self.progress = max_drop, progress
        self.report: SearchReport | None = None

    def call(self, model: onnx.ModelProto) -> PassResult:
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
        return PassResult(best, True, {"int8_ops": int8_op_counts(best), FALLBACK: self.report.as_dict()})
