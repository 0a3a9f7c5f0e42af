"""The weight-only grids as numbers: a Q4_1 grid found again by the offset fit, and the simulated
int4 error that chooses smoothing for weight-only models (RTN and offsets)."""

from types import SimpleNamespace

import numpy as np

from onnxopt.graph_queries.smooth_error import smoothing_scales
from onnxopt.graph_queries.weight_grids import fit_blocks, fitted_weights, weight_only_error
from tests.quantize.test_int4_offset import BLOCK, K, q4_1_weight


def test_fit_blocks_finds_a_q4_1_grid_again():
    w = q4_1_weight(np.random.default_rng(0))
    q, _scale, _offset = fit_blocks(w.T, BLOCK)
    rebuilt = fitted_weights(w.T, BLOCK).T
    assert np.abs(rebuilt - w).max() < 1e-6 * np.abs(w).max()
    assert q.min() == 0 and q.max() == 15


def test_scaling_up_the_channels_activations_rely_on_lowers_the_int4_error():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(256, 64))
    rows[:, 3] *= 40  # one input channel carries most of the output, as LLM outlier channels do
    weights = [rng.normal(size=(64, 32))]
    stats = SimpleNamespace(rows=rows, absmax=np.abs(rows).max(0))
    absmax_w = np.abs(weights[0]).max(1)
    plain = weight_only_error(stats, weights, np.ones(64))
    smoothed = weight_only_error(stats, weights, smoothing_scales(stats.absmax, absmax_w, 0.5))
    assert smoothed < 0.5 * plain
    # Exact activations: with 8 bits the error is far below 4 bits'.
    assert weight_only_error(stats, weights, np.ones(64), bits=8) < plain / 100


def test_smoothing_simulates_the_offset_quantizer():
    """Smoothing before int4 is chosen by the simulated error of the quantizer that will run: a
    Q4_1 grid costs `offset` nothing, so no smoothing scale can help it (and would break the grid)."""

    class Stats:
        rows = np.random.default_rng(5).standard_normal((64, K))

    w = q4_1_weight(np.random.default_rng(6)).astype(np.float64)
    ones = np.ones(K)
    assert weight_only_error(Stats, [w], ones, algo="offset") < 1e-10
    assert weight_only_error(Stats, [w], ones, algo="rtn") > 1e-4


def test_both_errors_measured_against_precomputed_products_are_the_same():
    """Smoothing computes X·W once per group and hands it to each alpha's error (passes/smooth.py):
    the figure must be the one each error computes on its own, int8 and int4 alike."""
    from onnxopt.graph_queries.smooth_error import exact_products, quant_error

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(128, 64))
    rows[:, 5] *= 30
    stats = SimpleNamespace(rows=rows, absmax=np.abs(rows).max(0), low=rows.min(0), high=rows.max(0))
    weights = [rng.normal(size=(64, 32)), rng.normal(size=(64, 16))]
    scales = smoothing_scales(stats.absmax, np.max([np.abs(w).max(1) for w in weights], axis=0), 0.5)
    exact = exact_products(stats, weights)
    for error in (quant_error, weight_only_error):
        alone = error(stats, weights, scales)
        assert error(stats, weights, scales, exact=exact) == alone
        assert error(stats, weights, np.ones(64)) > alone  # smoothing helps this outlier channel
        # products of other weights are another reference, and another figure
        assert error(stats, weights, scales, exact=exact_products(stats, [2 * w for w in weights])) > alone
