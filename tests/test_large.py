"""A model over 2 GB (weights in external data, beyond protobuf's limit): generated in the test,
then inspected, quantized and timed. Slow (about 2 minutes, 10 GB of memory at the peak)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@pytest.mark.slow
def test_model_over_2gb_quantizes(cli, tmp_path):
    hidden, ffn = 4096, 65536  # two 1 GiB weights plus a bias: just past 2**31 bytes
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((hidden, ffn), dtype=np.float32) * 0.02, "w1"),
        numpy_helper.from_array(rng.standard_normal((ffn, hidden), dtype=np.float32) * 0.02, "w2"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", hidden])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "big"
    src.mkdir()
    onnx.save(model, str(src / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    del model, initializers
    assert (src / "model.onnx.data").stat().st_size > 2**31

    code, stdout, err = cli("inspect", src)
    assert code == 0, err
    out = tmp_path / "q"
    code, stdout, err = cli("quantize", src, "--dynamic", "-o", out)
    assert code == 0, err
    size = sum(p.stat().st_size for p in out.iterdir() if p.name.startswith("model.onnx"))
    assert 2**31 / 4.2 < size < 2**31 / 3.8  # int8: a quarter of the size
    code, stdout, err = cli("bench", src, out, "--batch", "1", "--seq", "1", "--runs", "2", "--min-time", "0")
    assert code == 0, err
