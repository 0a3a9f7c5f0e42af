"""The activation-weighted search of int4 blocks (graph_queries/block_search.py) and the offset pass
that uses it: a lower weighted error than min-max on planted blocks, never a higher one, a Q4_1 grid
still found again, and the input model untouched."""

import numpy as np

from onnxopt.graph_queries.block_search import search_blocks, searched_weights, weighted_error
from onnxopt.graph_queries.weight_grids import fitted_weights
from onnxopt.passes.quantize_weights_offset import QuantizeWeightsOffset
from tests.quantize.test_int4_offset import BLOCK, K, matmul_model, q4_1_weight, relative_error


def _outlier_blocks(rng, n=64, k=K):
    """Gaussian weights with one far value per block: min-max spends most levels on it."""
    w = rng.standard_normal((n, k)) * 0.02
    w[:, ::BLOCK] += 0.2 * np.sign(rng.standard_normal((n, k // BLOCK)))
    return w


def test_the_search_lowers_the_weighted_error_against_min_max():
    rng = np.random.default_rng(0)
    w = _outlier_blocks(rng)
    importance = rng.uniform(0.1, 1.0, K)
    importance[::BLOCK] = 1e-3  # the outliers' channels carry little activation
    plain = weighted_error(w, fitted_weights(w, BLOCK), importance)
    searched = weighted_error(w, searched_weights(w, BLOCK, importance), importance)
    assert searched < 0.6 * plain, (searched, plain)


def _per_block(w, fit, importance):
    return (importance.reshape(1, -1, BLOCK) * (w - fit).reshape(len(w), -1, BLOCK) ** 2).sum(-1)


def test_no_block_is_worse_than_min_max_and_a_q4_1_grid_stays_exact():
    rng = np.random.default_rng(1)
    for w in (rng.standard_normal((32, K)), _outlier_blocks(rng, 32), rng.uniform(-1, 1, (32, K)) ** 3):
        importance = rng.uniform(0, 1, K) ** 4
        searched = _per_block(w, searched_weights(w, BLOCK, importance), importance)
        plain = _per_block(w, fitted_weights(w, BLOCK), importance)
        assert (searched <= plain * (1 + 1e-6) + 1e-12).all()
        assert searched.sum() < plain.sum()
    grid = q4_1_weight(rng).T.astype(np.float64)  # [N, K]
    rebuilt = searched_weights(grid, BLOCK, rng.uniform(0.1, 1, K))
    assert np.abs(rebuilt - grid).max() < 1e-6 * np.abs(grid).max()
    q, scale, _ = search_blocks(grid, BLOCK, np.ones(K))
    assert q.dtype == np.uint8 and q.max() <= 15 and (scale > 0).all()


def test_the_pass_searches_with_the_inputs_activations_and_leaves_its_input_alone():
    rng = np.random.default_rng(2)
    weights = [_outlier_blocks(rng, 48).T.astype(np.float32)]  # [K, N]
    model = matmul_model(weights)
    before = model.SerializeToString()
    spread = np.where(np.arange(K) % BLOCK == 0, 0.03, 1.0).astype(np.float32)  # quiet outlier channels
    x = (rng.standard_normal((1, 64, K)) * spread).astype(np.float32)
    asked = []

    def importance(graph, tensors):
        asked.append(tensors)
        assert graph.SerializeToString() == before  # the pass's input, as given
        return {"x": (x.reshape(-1, K).astype(np.float64) ** 2).mean(0)}

    searched = QuantizeWeightsOffset(BLOCK, 4, importance=importance)(model)
    plain = QuantizeWeightsOffset(BLOCK, 4)(model)
    assert model.SerializeToString() == before and asked == [["x"]]
    assert searched.details["searched"] == 1 and "searched" not in plain.details
    found, base = relative_error(searched.model, weights, x), relative_error(plain.model, weights, x)
    assert found < 0.7 * base, (found, base)


def _integer_fit(w, importance):
    from onnxopt.graph_queries.block_search import search_integer_zero

    q, scale, zero = search_integer_zero(w, BLOCK, importance)
    assert q.dtype == np.uint8 and zero.dtype == np.uint8 and q.max() <= 15 and zero.max() <= 15
    return (scale[..., None] * (q.astype(np.float64) - zero[..., None])).reshape(w.shape)


def _rtn_fit(w):
    from onnxopt.graph_queries.weight_grids import zero_range_levels

    q, scale, zero = zero_range_levels(w.reshape(len(w), -1, BLOCK), 15, axis=-1)
    return ((q - zero) * scale).reshape(w.shape)


def test_the_integer_zero_search_is_never_worse_than_rtn_per_block_and_better_in_all():
    rng = np.random.default_rng(4)
    for w in (rng.standard_normal((32, K)), _outlier_blocks(rng, 32), rng.uniform(-1, 1, (32, K)) ** 3 + 0.2):
        importance = rng.uniform(0, 1, K) ** 4
        searched = _per_block(w, _integer_fit(w, importance), importance)
        rtn = _per_block(w, _rtn_fit(w), importance)
        assert (searched <= rtn * (1 + 1e-5) + 1e-12).all()
        assert searched.sum() < 0.9 * rtn.sum(), (searched.sum(), rtn.sum())


def test_the_asym_pass_reads_its_input_directly_and_beats_rtn():
    from onnxopt.passes.quantize_weights import QuantizeWeights

    rng = np.random.default_rng(6)
    weights = [_outlier_blocks(rng, 48).T.astype(np.float32), _outlier_blocks(rng, 16).T.astype(np.float32)]
    model = matmul_model(weights)
    spread = np.where(np.arange(K) % BLOCK == 0, 0.03, 1.0).astype(np.float32)  # quiet outlier channels
    x = (rng.standard_normal((1, 64, K)) * spread).astype(np.float32)

    def importance(graph, tensors):
        return {"x": (x.reshape(-1, K).astype(np.float64) ** 2).mean(0)}

    result = QuantizeWeights(4, BLOCK, "asym", 4, importance=importance)(model)
    nodes = result.model.graph.node
    assert [n.op_type for n in nodes] == ["MatMulNBits", "MatMulNBits"]  # no block sums
    assert all(n.input[0] == "x" and onnx_attr(n, "K") == K for n in nodes)
    assert result.details["algorithm"] == "asym" and "integer zero points" in result.details["layout"]
    plain = QuantizeWeights(4, BLOCK, "rtn", 4)(model).model
    found, rtn = relative_error(result.model, weights, x), relative_error(plain, weights, x)
    assert found < 0.8 * rtn, (found, rtn)


def onnx_attr(node, name):
    return next(a.i for a in node.attribute if a.name == name)
