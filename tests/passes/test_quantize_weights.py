"""QuantizeWeights: MatMul weights to MatMulNBits blocks (onnxruntime's RTN), on a copy; an excluded
MatMul stays fp32 and is reported; the output stays close. Its analyses (the LM head, the simulated
int4 error) are tested in tests/graph_queries/."""

import numpy as np

from onnxopt.passes.quantize_weights import QuantizeWeights
from tests.quantize.test_int4_offset import K, matmul_model, run


def test_rtn_blocks_every_matmul_but_the_excluded_one():
    rng = np.random.default_rng(0)
    model = matmul_model([rng.normal(size=(128, 48)).astype(np.float32) for _ in range(2)])
    before = model.SerializeToString()
    result = QuantizeWeights(4, 32, "rtn", 4, exclude=("mm1",))(model)
    assert model.SerializeToString() == before
    ops = [n.op_type for n in result.model.graph.node]
    assert result.modified and ops.count("MatMulNBits") == 1 and ops.count("MatMul") == 1
    assert list(result.details["skipped"]) == ["mm1"]
    x = rng.normal(size=(1, 3, 128)).astype(np.float32)
    for got, want in zip(run(result.model, x), run(model, x), strict=True):
        assert np.linalg.norm(got - want) < 0.2 * np.linalg.norm(want)


def test_8bit_blocks_are_onnxruntimes_grid_written_one_weight_at_a_time(tmp_path, monkeypatch):
    """onnxopt's own 8-bit pass gives what onnxruntime's quantizer gives (but for ties) without it:
    with a weight store open its levels go to the scratch file; a depth of partial blocks still
    goes to onnxruntime's quantizer (which pads the last block)."""
    import onnx
    from onnx import numpy_helper

    from onnxopt.io.weight_store import weights_on_disk
    from onnxopt.passes import quantize_weights

    rng = np.random.default_rng(1)
    model = matmul_model([rng.normal(size=(K, 8192)).astype(np.float32)])
    theirs = QuantizeWeights(8, 32, "rtn", 4).ort_quantizer(model).model
    ours = QuantizeWeights(8, 32, "rtn", 4)(model)
    assert [n.op_type for n in ours.model.graph.node] == ["MatMulNBits"]
    assert ours.details["int8_ops"]["MatMulNBits"] == 1
    mine = {t.name: numpy_helper.to_array(t) for t in ours.model.graph.initializer}
    ort = {t.name: numpy_helper.to_array(t) for t in theirs.graph.initializer}
    np.testing.assert_array_equal(mine["mm0_Q8_scales"], ort["w0_scales"].reshape(-1))
    np.testing.assert_array_equal(mine["mm0_Q8_zero_points"], ort["w0_zero_points"].reshape(-1))
    levels = mine["mm0_Q8_B"].astype(int) - ort["w0_Q8"].reshape(mine["mm0_Q8_B"].shape)
    assert np.abs(levels).max() <= 1 and np.mean(levels != 0) < 1e-4  # ties rounded the other way
    x = rng.normal(size=(1, 3, K)).astype(np.float32)
    np.testing.assert_allclose(run(ours.model, x)[0], run(theirs, x)[0], atol=0.05)

    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.onnx.data")
    stub = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    monkeypatch.setattr(quantize_weights.QuantizeWeights, "ort_quantizer", None)  # never called
    with weights_on_disk(tmp_path, {"m.onnx.data"}) as store:
        QuantizeWeights(8, 32, "rtn", 4)(stub)
        assert store.spilled == K * 8192  # the levels, one byte each, on disk

    partial = matmul_model([rng.normal(size=(40, 8)).astype(np.float32)], rank=2)
    monkeypatch.undo()
    result = QuantizeWeights(8, 32, "rtn", 4)(partial)
    assert [n.op_type for n in result.model.graph.node] == ["MatMulNBits"]


def test_8bit_leaves_half_weights_and_subgraphs_to_onnxruntime_and_stores_a_shared_weight_once():
    """What onnxopt's 8-bit pass does not take still reaches onnxruntime's quantizer: fp16 weights
    (its scales take their type) and graphs with an If (it quantizes inside the branches); a weight
    two MatMuls read is quantized once, and the count is of MatMulNBits made."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    half = matmul_model([rng.normal(size=(K, 64)).astype(np.float16)])
    half.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    result = QuantizeWeights(8, 32, "rtn", 4)(half)
    assert [n.op_type for n in result.model.graph.node] == ["MatMulNBits"]
    assert result.details["int8_ops"]["MatMulNBits"] == 1

    w = numpy_helper.from_array(rng.normal(size=(K, 64)).astype(np.float32), "w")
    branch = [helper.make_node("MatMul", ["x", "w"], [f"y_{b}"]) for b in ("then", "else")]
    graphs = [
        helper.make_graph(
            [n], f"g_{i}", [], [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, [1, 64])]
        )
        for i, n in enumerate(branch)
    ]
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=graphs[0], else_branch=graphs[1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    graph = helper.make_graph([node], "g", [x], [y], [w, cond])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    quantized = QuantizeWeights(8, 32, "rtn", 4)(model).model
    onnx.checker.check_model(quantized)
    names = {t.name for t in quantized.graph.initializer}
    branches = [n for a in quantized.graph.node[0].attribute for n in a.g.node]
    assert all(n.op_type == "MatMulNBits" and n.input[1] in names for n in branches)

    shared = matmul_model([rng.normal(size=(K, 64)).astype(np.float32)] * 2)
    shared.graph.initializer.pop()  # both MatMuls read w0
    shared.graph.node[1].input[1] = "w0"
    result = QuantizeWeights(8, 32, "rtn", 4)(shared)
    assert result.details["int8_ops"]["MatMulNBits"] == 2
    assert sum(t.name.endswith("_B") for t in result.model.graph.initializer) == 1
    x = rng.normal(size=(1, 3, K)).astype(np.float32)
    first, second = run(result.model, x)
    np.testing.assert_array_equal(first, second)
