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
from tests.passes.test_quantize import ranges_by_hand
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
    ranges = ranges_by_hand(model)
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
    ranges = ranges_by_hand(model)
    options = replace(QuantOptions(("MatMul",)), **kept)
    theirs, ours = _laid_out(model, ranges, options, False), _laid_out(model, ranges, options, True)

    def nodes(m):  # the QuantizeLinear is named after its input, with the pass's own suffix
        return [(n.op_type, n.name if n.op_type != "QuantizeLinear" else "") for n in m.graph.node]

    assert nodes(ours) == nodes(theirs)
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
    ranges = ranges_by_hand(model)
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


_MIXED = """<ir_version: 8, opset_import: ["" : 17]>
mixed (float[N, 4] x) => (float[N, 4] y)
<float[4, 4] w1 = {W}, float[4, 4] w2 = {W}, float[4] b = {0.1, 0.2, 0.3, 0.4}> {
    [mm] m = MatMul(x, w1)
    [gemm] g = Gemm(x, w2, b)
    [after_gemm] h = MatMul(g, w1)
    [dyn] d = MatMul(x, w2)
    xt = Transpose(x)
    [act] p = MatMul(xt, m)
    [act2] q = MatMul(m, p)
    s = Add(h, d)
    y = Add(s, q)
}"""


def _mixed():
    weights = ", ".join(f"{v:.2f}" for v in np.linspace(-1, 1, 16))
    return onnx.parser.parse_model(_MIXED.replace("{W}", "{" + weights + "}"))


@pytest.mark.parametrize("activations", ["u8", "s8"])
def test_a_graph_with_gemm_shared_inputs_and_activation_products_matches_the_old_path(activations):
    """A Gemm reading the same input as a MatMul, a MatMul reading a Gemm's output, a MatMul left
    dynamic on a shared input, and activation x activation MatMuls: what the own pass does not
    write stays quantize_static's and quantize_dynamic's, and nothing is named twice."""
    model = _mixed()
    ranges = ranges_by_hand(model)
    options = QuantOptions(("MatMul", "Gemm"), dynamic_nodes=("dyn",), activations=activations)
    theirs, ours = _laid_out(model, ranges, options, False), _laid_out(model, ranges, options, True)
    onnx.checker.check_model(ours)
    outputs = [o for n in ours.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))

    def kinds(m):
        return {
            n.name: n.op_type
            for n in m.graph.node
            if n.name in ("mm", "gemm", "after_gemm", "dyn", "act", "act2")
        }

    assert kinds(ours) == kinds(theirs)
    assert kinds(ours)["mm"] == kinds(ours)["after_gemm"] == "MatMulIntegerToFloat"
    feed = feed_for(model)
    # The int8 MatMuls and the Gemm compute the same values either way; the activation x activation
    # chain after them (left float or Q/DQ by onnxruntime) differs by rounding only.
    ours_values, theirs_values = _values(ours, feed, "mhg"), _values(theirs, feed, "mhg")
    for name in "mhg":
        np.testing.assert_allclose(ours_values[name], theirs_values[name], rtol=1e-5, atol=1e-5, err_msg=name)
    exact = run(model, feed)[0]

    def error(m):
        return float(np.linalg.norm(run(m, feed)[0] - exact) / np.linalg.norm(exact))

    # s8: 0.034 against 0.020 (the chain's roundings cancel differently); u8: equal
    assert error(ours) < 1.5 * error(theirs) + 0.01, (error(ours), error(theirs))


def _values(model, feed, names):
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def test_a_matmul_left_dynamic_on_an_input_the_pass_quantized_stays_dynamic():
    """quantize_dynamic looks for an existing quantized input by name: had the pass used
    quantize_static's names, the dynamic MatMul would have read its static scale."""
    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        two (float[N, 4] x) => (float[N, 4] y)
        <float[4, 4] w1 = {1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1},
         float[4, 4] w2 = {0,1,0,0, 1,0,0,0, 0,0,0,1, 0,0,1,0}> {
            [mm] m = MatMul(x, w1)
            [dyn] d = MatMul(x, w2)
            y = Add(m, d)
        }"""
    )
    options = QuantOptions(("MatMul",), dynamic_nodes=("dyn",))
    ours = _laid_out(model, ranges_by_hand(model), options, True)
    kinds = {n.name: (n.op_type, n.input[0]) for n in ours.graph.node if n.name in ("mm", "dyn_quant")}
    assert kinds["dyn_quant"] == ("DynamicQuantizeMatMul", "x")  # its own dynamic scale, from x
    assert kinds["mm"][0] == "MatMulIntegerToFloat"
    feed = feed_for(model)
    np.testing.assert_allclose(run(ours, feed)[0], run(model, feed)[0], atol=0.05)
