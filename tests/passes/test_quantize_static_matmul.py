"""onnxopt's own static int8 MatMuls (passes/quantize_static_matmul.py) against what onnxruntime's
quantize_static followed by the CPU layout wrote for the same ranges: the same int8 weights, scales
and zero points in the same kernels, without quantize_static's Q/DQ on graph outputs."""

from dataclasses import replace

import numpy as np
import onnx
import onnx.parser
import pytest
from onnxruntime.quantization import CalibrationMethod

from onnxopt.passes import Pipeline
from onnxopt.passes.cpu_int8_layout import CpuInt8Layout
from onnxopt.passes.quantize import QuantizeStatic, QuantOptions
from onnxopt.passes.quantize_static_matmul import int8_columns
from tests.passes.test_quantize import _ranges
from tests.passes.util import feed_for, graph, run


def _laid_out(model, ranges, options, own: bool):
    return Pipeline(
        [QuantizeStatic(ranges, CalibrationMethod.MinMax, options, int8_kernels=own), CpuInt8Layout()]
    ).run(model)[0]


def _kernels(model) -> dict[str, list]:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        n.name: [inits.get(i, i) for i in n.input]
        for n in model.graph.node
        if n.op_type == "MatMulIntegerToFloat"
    }


@pytest.mark.parametrize("name", ["ffn", "mlp"])
@pytest.mark.parametrize("reduce_range", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_own_static_matmuls_equal_quantize_static_and_the_layout(name, reduce_range, per_channel):
    model = graph(name)
    ranges = _ranges(model)
    options = QuantOptions(("MatMul",), per_channel=per_channel, reduce_range=reduce_range)
    theirs, ours = _laid_out(model, ranges, options, False), _laid_out(model, ranges, options, True)
    expected, got = _kernels(theirs), _kernels(ours)
    assert expected and got.keys() == expected.keys()
    for node, inputs in expected.items():
        for want, have in zip(inputs, got[node], strict=True):
            if isinstance(want, str):
                assert isinstance(have, str)
            else:
                assert have.dtype == want.dtype and have.shape == want.shape, node
                np.testing.assert_array_equal(have, want, err_msg=node)
    feed = feed_for(model)
    np.testing.assert_allclose(run(ours, feed)[0], run(theirs, feed)[0], atol=0.05)


@pytest.mark.parametrize("kept", [{"exclude": ("down",)}, {"dynamic_nodes": ("down",)}])
def test_excluded_and_dynamic_matmuls_are_left_to_their_own_paths(kept):
    model = graph("ffn")
    ranges = _ranges(model)
    options = replace(QuantOptions(("MatMul",)), **kept)
    theirs, ours = _laid_out(model, ranges, options, False), _laid_out(model, ranges, options, True)
    assert [(n.op_type, n.name) for n in ours.graph.node] == [(n.op_type, n.name) for n in theirs.graph.node]
    assert list(_kernels(ours)) == ["up"]
    feed = feed_for(model)
    np.testing.assert_array_equal(run(ours, feed)[0], run(theirs, feed)[0])


def test_graph_outputs_stay_float():
    """quantize_static wraps a MatMul that writes a graph output in Q/DQ (a decoder's logits came
    out on 256 levels); the own pass quantizes MatMul inputs only."""
    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        head (float[N, 4] x) => (float[N, 3] logits)
        <float[4, 3] w = {0.5, -0.25, 1.0, 0.75, 0.1, -0.5, -1.0, 0.3, 0.2, 0.05, 0.6, -0.7}>
        { logits = MatMul(x, w) }"""
    )
    ranges = _ranges(model)
    options = QuantOptions(("MatMul",))
    theirs, ours = _laid_out(model, ranges, options, False), _laid_out(model, ranges, options, True)

    def output_ops(m):
        return [n.op_type for n in m.graph.node if n.output[0] == "logits"]

    assert output_ops(theirs) == ["DequantizeLinear"]
    assert output_ops(ours) == ["MatMulIntegerToFloat"]


def test_int8_columns_zero_and_constant_columns():
    w = np.zeros((4, 3), np.float32)
    w[:, 1] = 0.5
    w[:, 2] = [-1, 0.25, 0.5, 1]
    levels, scales, zeros = int8_columns(w, reduce_range=False)
    assert scales[0] == 1.0 and (levels[:, 0] == 0).all()  # an all-zero column: scale 1, as onnxruntime
    assert levels[:, 1].tolist() == [127] * 4 and levels[:, 2].tolist() == [-127, 32, 64, 127]
    assert zeros.dtype == np.int8 and not zeros.any()
    assert int8_columns(w, reduce_range=True)[0][:, 2].tolist() == [-64, 16, 32, 64]
