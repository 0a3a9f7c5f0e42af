"""The CPU int8 layout pass: its five rules in order (each tested in cpu_int8_layout/), on a block in
the QDQ form quantize_static writes, rewritten for the CPU kernels."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxopt.passes.cpu_int8_layout import CpuInt8Layout
from tests.passes.util import graph, nodes, unchanged_by

H, F = 16, 32
RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _qdq_block() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> static int8 MatMul (+ output Q/DQ) -> SkipLayerNorm(+x) -> dynamic int8 MatMul -> BiasGelu."""
    w1 = RNG.normal(size=(H, H)).astype(np.float32)
    w2 = RNG.normal(size=(H, F)).astype(np.float32)
    s1, s2 = np.abs(w1).max(0) / 127, np.abs(w2).max(0) / 127
    inits = [
        _init("x_scale", np.float32(4 / 255)),
        _init("x_zp", np.uint8(128)),
        _init("w1_q", np.round(w1 / s1).astype(np.int8)),
        _init("w1_scale", s1.astype(np.float32)),
        _init("w1_zp", np.zeros(H, np.int8)),
        _init("y_scale", np.float32(40 / 255)),
        _init("y_zp", np.uint8(128)),
        _init("gamma", RNG.uniform(0.5, 1.5, H).astype(np.float32)),
        _init("beta", RNG.normal(size=H).astype(np.float32)),
        _init("bias1", RNG.normal(size=H).astype(np.float32)),
        _init("w2_q", np.round(w2 / s2).astype(np.int8)),
        _init("w2_scale", s2.astype(np.float32)),
        _init("w2_zp", np.int8(0)),
        _init("bias2", RNG.normal(size=F).astype(np.float32)),
    ]
    ms = "com.microsoft"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q_x"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "w1_zp"], ["w1"], name="dq_w1", axis=1),
        helper.make_node("MatMul", ["x_dq", "w1"], ["y"], name="dense"),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["y_q"], name="q_y"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y_dq"], name="dq_y"),
        helper.make_node(
            "SkipLayerNormalization",
            ["y_dq", "x", "gamma", "beta", "bias1"],
            ["h"],
            name="skip_ln",
            domain=ms,
            epsilon=1e-12,
        ),
        helper.make_node("DynamicQuantizeLinear", ["h"], ["h_q", "h_scale", "h_zp"], name="dql_h"),
        helper.make_node("Mul", ["h_scale", "w2_scale"], ["scales"], name="scales"),
        helper.make_node("MatMulInteger", ["h_q", "w2_q", "h_zp", "w2_zp"], ["acc"], name="up"),
        helper.make_node("Cast", ["acc"], ["acc_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["acc_f", "scales"], ["u"], name="rescale"),
        helper.make_node("BiasGelu", ["u", "bias2"], ["out"], name="gelu", domain=ms),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", H])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", F])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ms, 1)], ir_version=9
    )
    onnx.checker.check_model(model)
    return model, {"x": RNG.normal(size=(2, 5, H)).astype(np.float32)}


def _run(model, feed, optimized_path=None):
    options = ort.SessionOptions()
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_block_is_rewritten_into_cpu_int8_kernels():
    model, _feed = _qdq_block()
    result = unchanged_by(CpuInt8Layout(), model)
    assert result.modified
    assert result.details == {
        "layout": "onnxruntime-cpu",
        "rewrites": {
            "static_matmuls": 1,
            "dynamic_matmuls": 1,
            "float_qdq_removed": 1,
            "biases_folded": 2,
            "skip_layernorms_unfused": 1,
        },
        "skipped": {  # the DQs the static rewrite left unread: they go with the dead nodes
            "dq_x": "float Q/DQ: nothing reads it",
            "dq_w1": "float Q/DQ: its input is not a QuantizeLinear output",
        },
        "int8_ops": {"DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "QuantizeLinear": 1},
    }
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == [
        "QuantizeLinear",
        "MatMulIntegerToFloat",
        "Sum",
        "LayerNormalization",
        "DynamicQuantizeMatMul",
        "Gelu",
    ]
    by_name = {n.name: n for n in result.model.graph.node}
    assert list(by_name["dense"].input)[-1] == "bias1"  # SkipLayerNorm's bias moved into the MatMul
    assert list(by_name["up"].input)[-1] == "bias2"  # and BiasGelu's
    assert {o.domain for o in result.model.opset_import} == {"", "com.microsoft"}
    assert not result.model.graph.value_info


def test_unread_nodes_and_weights_go_and_the_microsoft_domain_is_declared():
    model = graph("qdq_matmul")  # opset "" only: the rewrites bring com.microsoft ops
    result = unchanged_by(CpuInt8Layout(), model)
    assert nodes(result.model) == [
        ("q_x", "QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
        ("dq_x", "DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        ("dense", "MatMulIntegerToFloat", ["x_q", "w_q", "x_scale", "w_scale", "x_zp", "w_zp", "b"], ["h"]),
        ("act", "Relu", ["h"], ["y"]),
        ("fp32_dense", "MatMul", ["x_dq", "w_f"], ["z"]),
    ]
    assert "h_scale" not in {t.name for t in result.model.graph.initializer}  # dq_h's, unread now
    assert [(o.domain, o.version) for o in result.model.opset_import] == [("", 18), ("com.microsoft", 1)]
    assert result.details["skipped"] == {
        "fp32_dense": "static MatMul: input 1 is not a DequantizeLinear output",
        "dq_x": "float Q/DQ: read by MatMul, which onnxruntime fuses with it",
        "dq_w": "float Q/DQ: its input is not a QuantizeLinear output",
    }


def _float_reference(model, x):
    """The block in float64 with the dequantized weights: what both int8 forms approximate."""
    t = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    w1, w2 = t["w1_q"] * t["w1_scale"], t["w2_q"] * t["w2_scale"]
    s = x @ w1 + t["bias1"] + x
    h = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-12) * t["gamma"] + t["beta"]
    u = h @ w2 + t["bias2"]
    from math import erf

    return u * 0.5 * (1 + np.vectorize(erf)(u / np.sqrt(2)))


def _close(got, want):
    return np.abs(got - want).max() < 0.02 * np.abs(want).max()


def test_rewritten_block_is_as_accurate_as_the_qdq_one():
    model, feed = _qdq_block()
    laid_out = CpuInt8Layout().call(model).model
    before, after = _run(model, feed), _run(laid_out, feed)
    exact = _float_reference(model, feed["x"].astype(np.float64))
    assert _close(after, before)
    # The layout drops y's requantization to y_scale before the LayerNorm: one rounding fewer.
    assert np.abs(after - exact).mean() <= np.abs(before - exact).mean()


def test_onnxruntime_does_not_fuse_the_layernorm_back(tmp_path):
    model, feed = _qdq_block()
    laid_out = CpuInt8Layout().call(model).model
    _run(laid_out, feed, optimized_path=tmp_path / "optimized.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "LayerNormalization" in ops and "MatMulIntegerToFloat" in ops
    assert not ops & {"SkipLayerNormalization", "BiasGelu", "DequantizeLinear"}


def test_float_graph_is_left_unchanged(graph_file):
    model = onnx.load(str(graph_file("mlp")))
    result = unchanged_by(CpuInt8Layout(), model)
    assert not result.modified
    reason = "static MatMul: input 0 is not a DequantizeLinear output"
    assert result.details == {
        "layout": "onnxruntime-cpu",
        "rewrites": {},
        "skipped": {"h": reason, "o": reason},  # unnamed MatMuls: named by their outputs
        "int8_ops": {},
    }
    assert [n.op_type for n in result.model.graph.node] == [n.op_type for n in model.graph.node]


def test_dequantize_feeding_a_matmul_it_cannot_rewrite_is_kept():
    model, feed = _qdq_block()
    # fp32 weights: the MatMul has no int8 form, so its DequantizeLinear input must stay.
    w1 = next(t for t in model.graph.initializer if t.name == "w1_q")
    model.graph.initializer.append(_init("w1_f", numpy_helper.to_array(w1).astype(np.float32) / 100))
    dense = next(n for n in model.graph.node if n.name == "dense")
    dense.input[1] = "w1_f"
    result = CpuInt8Layout().call(model)
    ops = [n.op_type for n in result.model.graph.node]
    assert "MatMul" in ops and "DequantizeLinear" in ops and "MatMulIntegerToFloat" not in ops
    assert result.details["skipped"]["dense"] == "static MatMul: input 1 is not a DequantizeLinear output"
    assert _close(_run(result.model, feed), _run(model, feed))
