"""The quantize passes write onnxruntime's int8 forms only (QDQ / quantize_dynamic's ops); the CPU
layout is its own step after them (quantizer_with_layout)."""

from dataclasses import replace

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization.calibrate import TensorData, TensorsData

from onnxopt.passes import Pipeline
from onnxopt.passes.cpu_int8_layout import CpuInt8Layout
from onnxopt.passes.quantize import (
    QuantizeDynamic,
    QuantizeStatic,
    QuantOptions,
    quantizer_with_layout,
)
from onnxopt.runtime.cpu import cpu_features
from tests.passes.util import feed_for, graph, node, run, unchanged_by

MATMUL = QuantOptions(op_types=("MatMul",))


def ranges_by_hand(model) -> TensorsData:
    """Min/max of every float tensor on random inputs: calibration, by hand."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [o for n in model.graph.node for o in n.output if o not in {v.name for v in model.graph.output}]
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in names
    )
    feed = feed_for(model, rows=32)
    values = dict(zip([o.name for o in probe.graph.output], run(probe, feed), strict=True)) | feed
    return TensorsData(
        CalibrationMethod.MinMax,
        {k: TensorData(lowest=np.float32(v.min()), highest=np.float32(v.max())) for k, v in values.items()},
    )


def test_dynamic_writes_quantize_dynamics_ops_on_a_copy():
    result = unchanged_by(QuantizeDynamic(MATMUL), graph("ffn"))
    assert result.details == {
        "layout": "qdq",
        "int8_ops": {"DynamicQuantizeLinear": 2, "MatMulInteger": 2},
        "weights": "s8",
        "activations": "u8 (dynamic)",
        "per_channel": True,
    }
    assert {n.op_type for n in result.model.graph.node} >= {"DynamicQuantizeLinear", "MatMulInteger", "Cast"}


def test_static_writes_qdq_and_gives_chosen_matmuls_dynamic_scales():
    model = graph("ffn")
    result = unchanged_by(QuantizeStatic(ranges_by_hand(model), CalibrationMethod.MinMax, MATMUL), model)
    assert result.details["layout"] == "qdq" and result.details["dynamic_activation_ops"] == []
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("MatMul") == 2 and "MatMulInteger" not in ops and "QuantizeLinear" in ops
    hybrid = QuantizeStatic(
        ranges_by_hand(model), CalibrationMethod.MinMax, QuantOptions(("MatMul",), dynamic_nodes=("down",))
    )
    result = hybrid(model)
    assert result.details["dynamic_matmuls"] == ["down"] and result.details["dynamic_activation_ops"] == [
        "MatMul"
    ]
    assert [n.op_type for n in result.model.graph.node].count("MatMulInteger") == 1
    assert node(result.model, "down_quant").op_type == "MatMulInteger"


def test_the_layout_is_a_step_of_its_own_after_the_quantizer():
    # 7-bit weights where the product uses them (x86 without VNNI): full-range s8 weights saturate
    # the AVX2 kernel's 16-bit sums, 0.084 off on an AMD EPYC with AVX2 only against 0.05 here.
    quantizer = QuantizeDynamic(replace(MATMUL, reduce_range=cpu_features().reduce_range))
    assert quantizer_with_layout(quantizer, cpu_layout=False) is quantizer
    laid_out = quantizer_with_layout(quantizer, cpu_layout=True)
    assert isinstance(laid_out, Pipeline) and laid_out.name == "quantize-dynamic"
    assert [type(p) for p in laid_out.passes] == [QuantizeDynamic, CpuInt8Layout]
    model = graph("ffn")
    out, reports = Pipeline([laid_out]).run(model)
    assert [r.name for r in reports] == ["quantize-dynamic", "cpu-int8-layout"]
    assert reports[0].details["layout"] == "qdq"
    # The last step says what the manifest records: the layout and the int8 ops of the final graph.
    assert reports[-1].details["layout"] == "onnxruntime-cpu"
    assert reports[-1].details["int8_ops"] == {"DynamicQuantizeMatMul": 2}
    assert reports[-1].details["rewrites"] == {"dynamic_matmuls": 2, "biases_folded": 1}
    assert reports[-1].details["skipped"] == {
        "down_quant": "bias fold: its reader Add 'down_bias' writes a graph output"
    }
    feed = feed_for(model)
    np.testing.assert_allclose(run(out, feed)[0], run(model, feed)[0], atol=0.05)
