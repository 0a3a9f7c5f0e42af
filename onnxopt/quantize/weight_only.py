"""Weight-only MatMulNBits for decoders: int4 in blocks (the LM head 8-bit where the plan says), or
8 bits in blocks of 32 for --dynamic; with --max-drop the costliest MatMuls widened (mixed_bits.py)."""

from __future__ import annotations

import numpy as np

from onnxopt.graph_queries.matmul_roles import lm_heads
from onnxopt.passes import Pipeline
from onnxopt.passes.quantize_weights import QuantizeWeights
from onnxopt.quantize.calibrate import collect_channel_stats
from onnxopt.quantize.drop_metrics import PerplexityDrop
from onnxopt.quantize.mixed_bits import mixed_bits_search
from onnxopt.quantize.plan import QuantizePlan
from onnxopt.quantize.texts import RunData


def weight_only_quantizer(model, plan: QuantizePlan, exclude: tuple[str, ...], data: RunData, progress):
    config = plan.options
    if plan.weight_bits == 4:
        quantizer = _int4(model, plan, exclude, data, progress)
    else:  # plan.py: DECODER_8BIT
        quantizer = QuantizeWeights(8, 32, "rtn", 4, exclude)
    if config.max_drop is None:
        return quantizer
    metric = PerplexityDrop.of(model, data.perplexity_ids, data.context, config.seq_len)
    return mixed_bits_search(model, plan, exclude, data.calibration, quantizer, metric, progress)


def _int4(model, plan: QuantizePlan, exclude: tuple[str, ...], data: RunData, progress=None):
    """4-bit MatMulNBits for the body; the LM head 8-bit where the plan says (plan.py: INT4_HEAD)."""
    config = plan.options
    heads = lm_heads(model) if plan.lm_head_8bit else ()
    excluded, feeds = exclude + heads, data.calibration or ()
    searched = plan.block_search and data.calibration is not None  # plan.py: BLOCK_SEARCH
    importance = mean_squares(data.calibration) if searched else None

    def on_progress(done, total):
        if progress is not None:
            progress(f"quantize-int4-{config.algo}", done, total)

    body = QuantizeWeights(
        4,
        config.block_size,
        config.algo,
        config.accuracy_level,
        excluded,
        feeds,
        importance=importance,
        on_progress=on_progress,
    )
    if not heads:
        return body
    head = QuantizeWeights(8, 32, "rtn", 4, exclude, include=heads)
    return Pipeline([body, head], name=body.name)


def mean_squares(feeds):
    """(model, tensors) -> {tensor: E[x^2] per channel} over the calibration rows."""

    def importance(model, tensors):
        stats = collect_channel_stats(model, feeds, tensors)
        return {name: np.mean(np.square(s.rows, dtype=np.float64), 0) for name, s in stats.items()}

    return importance
