"""FoldWeightTransposes: a MatMul reading Transpose(initializer) gets the transposed weight as its
own initializer; the function is unchanged and a Gather still reading the table keeps it."""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.passes.fold_weight_transposes import FoldWeightTransposes
from tests.passes.util import inits, nodes, run, unchanged_by

F = onnx.TensorProto.FLOAT


def _tied_head(perm=(1, 0), rank=2) -> onnx.ModelProto:
    """A tied embedding: Gather(E, ids) -> h, and the head MatMul(h, Transpose(E))."""
    rng = np.random.default_rng(0)
    shape = (11, 4) if rank == 2 else (11, 4, 1)
    table = numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), "E")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
            helper.make_node("Transpose", ["E"], ["E_t"], name="tie", perm=list(perm)),
            helper.make_node("MatMul", ["h", "E_t"], ["logits"], name="head"),
        ],
        "tied",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [2, 3])],
        [helper.make_tensor_value_info("logits", F, None)],
        [table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_transposed_table_becomes_the_heads_own_weight_and_outputs_stay():
    model = _tied_head()
    result = unchanged_by(FoldWeightTransposes(), model)
    assert result.modified and result.details == {"folded": ["head"], "skipped": {}}
    weight = "E__transposed_for_head"
    assert nodes(result.model) == [
        ("embed", "Gather", ["E", "ids"], ["h"]),
        ("head", "MatMul", ["h", weight], ["logits"]),
    ]
    np.testing.assert_array_equal(inits(result.model)[weight], inits(model)["E"].T)
    assert "E" in inits(result.model)  # the Gather still reads the table
    feed = {"ids": np.array([[0, 3, 10], [7, 7, 1]], dtype=np.int64)}
    (got,), (want,) = run(result.model, feed), run(model, feed)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_transpose_that_is_no_matrix_transpose_is_left_with_its_reason():
    model = _tied_head(perm=(2, 1, 0), rank=3)
    result = unchanged_by(FoldWeightTransposes(), model)
    assert not result.modified and result.details["folded"] == []
    assert result.details["skipped"] == {"head": "the transposed initializer is not a matrix"}
    assert nodes(result.model) == nodes(model)


def test_a_matmul_by_a_plain_initializer_is_not_reported():
    model = _tied_head()
    head = model.graph.node[2]
    head.input[1] = "W"
    model.graph.initializer.append(numpy_helper.from_array(np.ones((4, 11), np.float32), "W"))
    del model.graph.node[1]  # no Transpose at all
    result = unchanged_by(FoldWeightTransposes(), model)
    assert result.details == {"folded": [], "skipped": {}} and not result.modified
