"""int8 operators (QuantizeLinear/DequantizeLinear, or onnxruntime's CPU int8 kernels): static
ranges from calibration or dynamic ones at run time, with --max-drop the fewest sensitive nodes
kept fp32 (fallback.py)."""

from __future__ import annotations

from dataclasses import replace

from onnxopt.data.samples import input_types
from onnxopt.graph_queries.matmul_roles import after_activation
from onnxopt.passes.quantize import (
    QDQ_OPS,
    QuantizeDynamic,
    QuantizeStatic,
    QuantOptions,
    quantizer_with_layout,
)
from onnxopt.quantize.calibrate import collect_ranges
from onnxopt.quantize.drop_metrics import FidelityDrop, PerplexityDrop, StsDrop
from onnxopt.quantize.fallback import AccuracyAwareQuantize
from onnxopt.quantize.plan import QuantizePlan
from onnxopt.quantize.texts import RunData


def int8_quantizer(model, plan: QuantizePlan, options: QuantOptions, data: RunData, progress, label=""):
    """(the int8 quantizer pass, the calibration it used or None, its options)."""
    config = plan.options
    if plan.dynamic_gelu:
        options = replace(options, dynamic_nodes=after_activation(model))
    calibration = None
    if config.mode == "static":
        static_ops = [op for op in plan.ops if op in QDQ_OPS]
        count = len(data.calibration)
        calibration = collect_ranges(
            model,
            data.calibration,
            config.method,
            static_ops,
            on_sample=lambda i: progress(f"calibrate{label}", i, count),
        )

        def make_quantizer(excl: tuple[str, ...]):
            cpu_layout, options_now = not plan.qdq, replace(options, exclude=excl)
            quantizer = QuantizeStatic(calibration.ranges, calibration.method, options_now, cpu_layout)
            return quantizer_with_layout(quantizer, cpu_layout, plan.plain_onnx)
    else:

        def make_quantizer(excl: tuple[str, ...]):
            dynamic = QuantizeDynamic(replace(options, exclude=excl))
            return quantizer_with_layout(dynamic, not plan.qdq, plan.plain_onnx)

    if config.max_drop is None:
        return make_quantizer(options.exclude), calibration, options
    return _with_fallback(model, plan, make_quantizer, options, data, progress), calibration, options


def _with_fallback(model, plan: QuantizePlan, make_quantizer, options, data: RunData, progress):
    config = plan.options
    progress("reference outputs", 0, 0)
    ranker = FidelityDrop(model, list(data.holdout))
    metric = ranker
    if data.perplexity_ids is not None:
        metric = PerplexityDrop.of(model, data.perplexity_ids, data.context, config.seq_len)
    elif data.pairs is not None:
        metric = StsDrop(model, data.pairs, data.tokenizer, input_types(model), config.seq_len)
    return AccuracyAwareQuantize(
        make_quantizer, plan.ops, options.exclude, ranker, metric, metric.name, config.max_drop, progress
    )
