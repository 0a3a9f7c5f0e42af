"""QuantizeWeights: MatMul weights to MatMulNBits blocks (onnxruntime's RTN), on a copy; an excluded
MatMul stays fp32 and is reported; the output stays close. Its analyses (the LM head, the simulated
int4 error) are tested in tests/graph_queries/."""

import numpy as np

from onnxopt.passes.quantize_weights import QuantizeWeights
from tests.quantize.test_int4_offset import matmul_model, run


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
