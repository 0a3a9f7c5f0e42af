"""What smoothing chooses alpha by: the scales for an alpha, and the simulated int8 error of X.W
after smoothing (per-tensor asymmetric 8-bit activations, per-output-channel symmetric int8
weights). Asymmetric 8 bits is one grid for u8 (the CPU provider) and s8 (OpenVINO) alike.

The weights' grid is the one the quantizer writes: +-127, or +-64 with reduce_range (7-bit weights,
onnxruntime's ONNX_INT_TYPE_REDUCED_RANGE), which onnxopt uses on x86 without VNNI. Simulated at
+-127 there, smoothing chose alphas for a grid twice as fine as the one that ran: on an AMD EPYC
with AVX2 only (2026-12-07), the planted-outlier BERT's FFN error after smoothing was 0.75x the
unsmoothed instead of under 0.5x."""

from __future__ import annotations

from functools import partial

import numpy as np


def smoothing_scales(absmax_x: np.ndarray, absmax_w: np.ndarray, alpha: float) -> np.ndarray:
    x = np.maximum(absmax_x.astype(np.float64), 1e-5)
    w = np.maximum(absmax_w.astype(np.float64), 1e-5)
    return np.clip(x**alpha / w ** (1 - alpha), 1e-4, 1e4)


def fake_quant_activation(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per-tensor asymmetric uint8, as the CPU provider's static and dynamic kernels use."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0
    zero = np.round(-low / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def int8_weight_levels(reduce_range: bool) -> int:
    """The largest symmetric int8 weight level the quantizer writes."""
    return 64 if reduce_range else 127


def fake_quant_weight(w: np.ndarray, levels: int = 127) -> np.ndarray:
    """Per-output-channel symmetric int8 on +-levels (rows are input channels)."""
    scale = np.maximum(np.abs(w).max(0, keepdims=True), 1e-12) / levels
    return np.clip(np.round(w / scale), -levels, levels) * scale


def exact_products(stats, weights: list[np.ndarray]) -> list[np.ndarray]:
    """X·W for each weight on the sampled rows: the reference every alpha's error is measured
    against, the same for all of them, so computed once per group. Products in float32 (sums of
    the errors in float64): int8's error is far above float32's 24 bits."""
    x = stats.rows.astype(np.float32)
    return [x @ w.astype(np.float32) for w in weights]


def quant_error(
    stats, weights: list[np.ndarray], scales: np.ndarray, weight_levels: int = 127, exact=None
) -> float:
    """Relative squared error of X·W under simulated int8, after smoothing by `scales`; `exact`:
    exact_products(stats, weights), when the caller has them."""
    exact = exact if exact is not None else exact_products(stats, weights)
    x = stats.rows.astype(np.float64)
    xs = fake_quant_activation(
        x / scales, float((stats.low / scales).min()), float((stats.high / scales).max())
    ).astype(np.float32)
    num = den = 0.0
    for w, reference in zip(weights, exact, strict=True):
        fake = fake_quant_weight(w * scales[:, None], weight_levels).astype(np.float32)
        diff = xs @ fake - reference
        num += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
        den += float(np.einsum("ij,ij->", reference, reference, dtype=np.float64))
    return num / max(den, 1e-30)


def int8_error(reduce_range: bool):
    """quant_error on the weight grid the int8 quantizer writes (reduce_range: 7-bit weights)."""
    return partial(quant_error, weight_levels=int8_weight_levels(reduce_range))
