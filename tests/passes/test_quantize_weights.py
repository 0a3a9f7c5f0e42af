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
