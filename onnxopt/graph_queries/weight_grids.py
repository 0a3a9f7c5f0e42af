"""The grids weight-only quantization puts a weight on, as numbers: onnxruntime's RTN (min-max
levels with 0 inside every block's range, integer zero points) and onnxopt's block offsets (min-max
levels refitted by least squares, a float offset per block: passes/quantize_weights_offset.py), and
the simulated error of X·W on them that smoothing and the mixed-bits search are chosen by. Nothing
here reads or writes a graph; the passes that store these grids import them."""

from __future__ import annotations

import numpy as np

from onnxopt.graph_queries.smooth_error import exact_products

LEVELS = 15  # 4 bits
MIDDLE = 8  # MatMulNBits' zero point when it has none: 2 ** (bits - 1)


def fit_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q [N, K/block, block] in 0..15, scale and offset [N, K/block] for w [N, K]: min-max levels,
    then scale and offset refitted by least squares over the block's levels (exact when w is on a
    4-bit grid already)."""
    n, k = w.shape
    b = w.reshape(n, k // block, block).astype(np.float64)
    low, high = b.min(-1, keepdims=True), b.max(-1, keepdims=True)
    step = np.maximum((high - low) / LEVELS, 1e-12)
    q = np.clip(np.round((b - low) / step), 0, LEVELS)
    # Least squares of w on (q - 8) per block: the scale and offset that best fit these levels.
    centred = q - q.mean(-1, keepdims=True)
    spread = (centred**2).sum(-1, keepdims=True)
    fitted = np.where(spread > 0, (centred * b).sum(-1, keepdims=True) / np.maximum(spread, 1e-30), step)
    scale = np.where(fitted > 0, fitted, step)
    offset = (b - scale * (q - MIDDLE)).mean(-1, keepdims=True)
    return q.astype(np.uint8), scale[..., 0].astype(np.float32), offset[..., 0].astype(np.float32)


def fitted_weights(w: np.ndarray, block: int) -> np.ndarray:
    """w [N, K] as the offset quantizer stores it, in float: what its error is simulated with."""
    q, scale, offset = fit_blocks(w, block)
    return (scale[..., None] * (q.astype(np.float64) - MIDDLE) + offset[..., None]).reshape(w.shape)


def zero_range_levels(b: np.ndarray, levels: int, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric min-max levels along `axis` with 0 inside every range (onnxruntime's RTN):
    levels, scales and integer zero points, the reduced axis kept."""
    low = np.minimum(b.min(axis, keepdims=True), 0)
    high = np.maximum(b.max(axis, keepdims=True), 0)
    scale = np.maximum((high - low) / levels, 1e-12)
    zero = np.clip(np.round(-low / scale), 0, levels)
    return np.clip(np.round(b / scale) + zero, 0, levels), scale, zero


def weight_only_error(
    stats, weights: list, scales, bits: int = 4, block: int = 32, algo: str = "rtn", exact=None
) -> float:
    """Relative squared error of X·W when W·diag(s) is quantized to `bits` in blocks of `block`
    input channels (asymmetric, as MatMulNBits stores it) and X/s stays exact: what smoothing
    before weight-only quantization is chosen by. `exact`: the products X·W, when the caller has
    them (exact_products)."""
    # The products in float32, the sums in float64: the float64 products made smoothing most of a
    # Llama-3.2-1B shape's quantize time (issue 28); float32's 24 bits are far below int4's error.
    x = stats.rows.astype(np.float32)
    exact = exact if exact is not None else exact_products(stats, weights)
    num = den = 0.0
    for w, reference in zip(weights, exact, strict=True):
        fake = _fake_quant_blocks(w * scales[:, None], bits, block, algo).astype(np.float32)
        diff = (x / scales.astype(np.float32)) @ fake - reference
        num += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
        den += float(np.einsum("ij,ij->", reference, reference, dtype=np.float64))
    return num / max(den, 1e-30)


def _fake_quant_blocks(w, bits: int, block: int, algo: str = "rtn"):
    k, n = w.shape
    if k % block:
        return w
    if algo == "offset" and bits == 4:
        return fitted_weights(w.T, block).T
    q, scale, zero = zero_range_levels(w.reshape(k // block, block, n), 2**bits - 1, axis=1)
    return ((q - zero) * scale).reshape(k, n)
