"""QdqFp32Readers: a quantized tensor's fp32 readers (residual Add, un-smoothing Mul) take the tensor
itself; only the int8 readers keep its DequantizeLinear."""

import numpy as np

from onnxopt.passes.qdq_fp32_readers import QdqFp32Readers
from tests.passes.util import feed_for, graph, node, run, unchanged_by


def test_fp32_readers_take_the_tensor_and_the_matmul_keeps_its_dq():
    model = graph("qdq_shared")
    result = unchanged_by(QdqFp32Readers(), model)
    assert result.modified and result.details == {"moved": 1}
    out = result.model
    assert list(node(out, "dense").input) == ["x_dq", "w"]
    assert list(node(out, "residual").input) == ["x", "h"]
    assert list(node(out, "unsmooth").input) == ["x", "s"]
    feed = feed_for(model)
    y, z = run(out, feed)
    (h,) = run(_matmul_only(out), feed)
    # The skip connection and the Mul now carry no int8 rounding; the MatMul still does.
    np.testing.assert_allclose(y, feed["x"] + h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(z, feed["x"] * np.array([0.5, 2.0, 1.5, 0.25], np.float32), rtol=1e-6)
    y_before, _ = run(model, feed)
    assert not np.allclose(y_before, y, atol=1e-4)  # before, the residual read the rounded copy


def test_a_dq_read_only_in_int8_or_only_in_fp32_is_left_with_the_reason():
    from onnxopt.passes.qdq_fp32_readers import Fp32ReadersOffQdq
    from onnxopt.passes.rewrite import apply_rule

    model = graph("qdq_shared")
    del model.graph.node[4:]  # residual and unsmooth go: dense alone reads dq_x
    del model.graph.output[:]
    model.graph.output.extend([_output("h")])
    result = apply_rule(Fp32ReadersOffQdq(), model)
    assert result.rewritten == 0
    assert result.skipped == {
        "dq_x": "fp32 readers off Q/DQ: every reader runs it in int8",
        "dq_w": "fp32 readers off Q/DQ: its input is not a QuantizeLinear output",
    }
    model = graph("qdq_shared")
    node(model, "dense").input[0] = "x"  # now nothing reads dq_x in int8
    assert apply_rule(Fp32ReadersOffQdq(), model).skipped["dq_x"] == (
        "fp32 readers off Q/DQ: no reader runs it in int8"
    )


def _output(name):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _matmul_only(model):
    """The MatMul's output h of `model` as its only output."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    copy.graph.output.extend([_output("h")])
    return copy
