"""An activation-weighted search of each int4 block's grid (scale and float minimum) for the offset
quantizer (passes/quantize_weights_offset.py), in place of min-max levels.

Min-max spends a block's 16 levels on its extremes and weighs every input channel alike. The search
minimises sum_i E[x_i^2] (w_i - q(w_i))^2 over the block, the diagonal of the output error X·W, with
E[x_i^2] per input channel from calibration activations (AWQ's auto-clip and llama.cpp's
make_qkx2_quants (Q4_K) search the same error, the latter with an importance vector): a few
candidate steps at and below min-max's range, for each the levels by rounding and then the scale
and minimum by weighted least squares, a re-rounding on that fit, the best candidate per block
kept. Vectorised over the blocks of a few output rows at a time.

Why: see BLOCK_SEARCH in onnxopt/quantize/plan.py (measured on an off-grid SmolLM2).
"""

from __future__ import annotations

import numpy as np

from onnxopt.graph_queries.weight_grids import LEVELS, MIDDLE

# Candidate ranges: min-max's, and shrunk to these fractions of it at the low end, the high end or
# both (AWQ's auto-clip shrinks to 0.5 at most); each then refitted.
RATIOS = (0.95, 0.9, 0.8, 0.7, 0.6)
ROUNDS = 1  # re-roundings on each candidate's fit
# Rows searched at once, in float32: a 2048 x 2048 matrix took 2.02 s in one float64 piece, 0.93 s
# in pieces of 64 rows (the ~30 temporaries stay in cache; same bytes out) and 0.70 s in float32
# (weighted error +3e-6 relative, 0.02% of levels different); 16 and 256 rows were slower (1.18 s,
# 1.13 s). AMD EPYC AVX2, 2026-12-07 - a 1B model's int4 search went from ~15 to ~5 min.
ROWS = 64


class _Sums:
    """A block's fixed weighted sums (of d, d·w, d·w²), for least squares on any levels."""

    def __init__(self, b, d):
        self.b, self.d = b, d
        self.sw, self.sx = d.sum(-1, keepdims=True), (d * b).sum(-1, keepdims=True)
        self.sxx = (d * b * b).sum(-1, keepdims=True)

    def fit(self, q):
        """Weighted least squares of w on scale * q + low per block: (scale, low, error); where the
        levels do not pin a positive scale, scale 0 (the caller's fallback)."""
        dq = self.d * q
        sq, sqq, sqx = (
            dq.sum(-1, keepdims=True),
            (dq * q).sum(-1, keepdims=True),
            (dq * self.b).sum(-1, keepdims=True),
        )
        det = self.sw * sqq - sq * sq
        ok = det > 1e-12 * self.sw * sqq
        scale = np.where(ok, (self.sw * sqx - sq * self.sx) / np.where(ok, det, 1.0), 0.0)
        low = np.where(ok, (self.sx - scale * sq) / self.sw, self.sx / self.sw)
        # At the least-squares optimum the residual is sum d w^2 - scale * sum d q w - low * sum d w.
        error = np.maximum(self.sxx - scale * sqx - low * self.sx, 0.0)
        return np.where(scale > 0, scale, 0.0), low, np.where(scale > 0, error, np.inf)


def _levels(b, low, scale):
    return np.clip(np.round((b - low) / np.where(scale > 0, scale, 1.0)), 0, LEVELS)


def search_blocks(w: np.ndarray, block: int, importance: np.ndarray) -> tuple:
    """As weight_grids.fit_blocks (q [N, K/block, block] in 0..15, scale and offset [N, K/block],
    w = scale * (q - 8) + offset) for w [N, K], the grid of each block chosen by the error weighted
    with `importance` [K] (E[x^2] per input channel). Min-max is one of the candidates, and the
    levels are rounded again on the chosen fit, so no block's weighted error is above min-max's with
    its least-squares fit."""
    return _in_pieces(_search_rows, w, block, importance)


def _in_pieces(search, w: np.ndarray, block: int, importance: np.ndarray) -> tuple:
    """`search` over ROWS output rows of w at a time, with the importance per block, joined."""
    n, k = w.shape
    d = np.maximum(importance.astype(np.float32).reshape(1, k // block, block), 0.0)
    d = d + 1e-6 * d.mean(-1, keepdims=True) + 1e-30  # unseen channels count a little
    pieces = [search(w[i : i + ROWS], block, d) for i in range(0, n, ROWS)]
    return tuple(np.concatenate(part) for part in zip(*pieces, strict=True))


def _starts(low, span) -> list:
    """Candidate (start, width) ranges: min-max's, then each RATIOS shrink at the low end, the
    middle or the high end."""
    return [(low, span)] + [(low + (1 - r) * span * a, r * span) for r in RATIOS for a in (0.0, 0.5, 1.0)]


def _search_rows(w: np.ndarray, block: int, d: np.ndarray) -> tuple:
    n, k = w.shape
    b = w.reshape(n, k // block, block).astype(np.float32)
    sums = _Sums(b, np.broadcast_to(d, b.shape))
    low, high = b.min(-1, keepdims=True), b.max(-1, keepdims=True)
    span = np.maximum(high - low, 1e-12)
    best_err, best_scale, best_low = np.full(low.shape, np.inf), span / LEVELS, low  # min-max's grid
    for start, width in _starts(low, span):
        scale, lo, err = sums.fit(_levels(b, start, width / LEVELS))
        for _ in range(ROUNDS):
            again = sums.fit(_levels(b, lo, np.where(scale > 0, scale, width / LEVELS)))
            keep = again[2] <= err
            scale, lo, err = (
                np.where(keep, new, old) for new, old in zip(again, (scale, lo, err), strict=True)
            )
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale, best_low = np.where(better, scale, best_scale), np.where(better, lo, best_low)
    q = _levels(b, best_low, best_scale)  # nearest levels on the chosen grid: never a larger error
    offset = best_low + MIDDLE * best_scale
    return q.astype(np.uint8), best_scale[..., 0].astype(np.float32), offset[..., 0].astype(np.float32)


def search_integer_zero(w: np.ndarray, block: int, importance: np.ndarray) -> tuple:
    """The same search on grids whose zero point is a whole level, w = scale * (q - zero) with zero
    in 0..15 (MatMulNBits' own zero points, no remainders): q [N, K/block, block], scale and zero
    [N, K/block]. Each candidate range gives a zero point by rounding; then the scale alone is
    fitted by weighted least squares, and the levels rounded again on it."""
    return _in_pieces(_search_integer_rows, w, block, importance)


def _integer_fit(b, d, sxx, zero, scale):
    """Levels rounded on (scale, zero), then the least-squares scale on them and its error."""
    q = np.clip(np.round(b / np.where(scale > 0, scale, 1.0)) + zero, 0, LEVELS)
    c = q - zero
    dc = d * c
    scc, scx = (dc * c).sum(-1, keepdims=True), (dc * b).sum(-1, keepdims=True)
    fitted = np.where(scc > 0, scx / np.where(scc > 0, scc, 1.0), 0.0)
    error = np.where(fitted > 0, np.maximum(sxx - fitted * scx, 0.0), np.inf)
    return np.where(fitted > 0, fitted, 0.0), error


def _search_integer_rows(w: np.ndarray, block: int, d: np.ndarray) -> tuple:
    n, k = w.shape
    b = w.reshape(n, k // block, block).astype(np.float32)
    d = np.broadcast_to(d, b.shape)
    sxx = (d * b * b).sum(-1, keepdims=True)
    low, high = np.minimum(b.min(-1, keepdims=True), 0), np.maximum(b.max(-1, keepdims=True), 0)
    span = np.maximum(high - low, 1e-12)
    best_err = np.full(low.shape, np.inf)
    best_scale, best_zero = span / LEVELS, np.clip(np.round(-low / (span / LEVELS)), 0, LEVELS)
    for start, width in _starts(low, span):
        step = width / LEVELS
        zero = np.clip(np.round(-start / step), 0, LEVELS)
        scale, err = _integer_fit(b, d, sxx, zero, step)
        for _ in range(ROUNDS):
            again, again_err = _integer_fit(b, d, sxx, zero, np.where(scale > 0, scale, step))
            keep = again_err <= err
            scale, err = np.where(keep, again, scale), np.where(keep, again_err, err)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale, best_zero = np.where(better, scale, best_scale), np.where(better, zero, best_zero)
    q = np.clip(np.round(b / best_scale) + best_zero, 0, LEVELS)
    return q.astype(np.uint8), best_scale[..., 0].astype(np.float32), best_zero[..., 0].astype(np.uint8)


def searched_weights(w: np.ndarray, block: int, importance: np.ndarray) -> np.ndarray:
    """w [N, K] as the offset quantizer stores it after the search, in float."""
    q, scale, offset = search_blocks(w, block, importance)
    return (scale[..., None] * (q.astype(np.float64) - MIDDLE) + offset[..., None]).reshape(w.shape)


def weighted_error(w: np.ndarray, fitted: np.ndarray, importance: np.ndarray) -> float:
    """sum_i importance_i (w - fitted)^2 over w [N, K]: the diagonal part of the output error."""
    return float((importance[None, :] * (w.astype(np.float64) - fitted) ** 2).sum())
