"""Weight-only quantization helpers: the LM head found by what it writes, and the simulated int4
error that chooses smoothing for weight-only models."""

from types import SimpleNamespace

import numpy as np
from onnx import TensorProto, helper

from onnxopt.passes.quantize_weights import lm_heads, weight_only_error
from onnxopt.passes.smooth import smoothing_scales


def test_the_lm_head_is_the_matmul_that_writes_a_graph_output():
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="body"),
        helper.make_node("MatMul", ["h", "w2"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    assert lm_heads(helper.make_model(graph)) == ("head",)


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
