"""QuantizeEmbeddings: vocabulary tables to int8 with one scale per row, in plain ONNX ops."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.passes.quantize_embeddings import QuantizeEmbeddings
from onnxopt.runtime.sessions import session_for_model


def _model(rows: int, shared: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((rows, 16)) * rng.uniform(0.01, 3, (rows, 1))).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed")]
    outputs = [helper.make_tensor_value_info("emb", onnx.TensorProto.FLOAT, None)]
    if shared:  # a tied head reading the same table
        nodes.append(helper.make_node("MatMul", ["emb", "table_t"], ["logits"], name="head"))
        nodes.append(helper.make_node("Transpose", ["table"], ["table_t"], name="tie", perm=[1, 0]))
        outputs = [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, 5])],
        outputs,
        [numpy_helper.from_array(table, "table")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model, ids):
    return session_for_model(model).run(None, {"ids": ids})[0]


def test_a_vocabulary_table_goes_int8_per_row():
    model = _model(2000)
    before = model.SerializeToString()
    result = QuantizeEmbeddings()(model)
    assert model.SerializeToString() == before  # functional: its input untouched
    assert result.modified and result.details["embeddings_int8"] == 1
    types = {t.name: t.data_type for t in result.model.graph.initializer}
    assert types == {"table_int8": onnx.TensorProto.INT8, "table_row_scale": onnx.TensorProto.FLOAT}
    assert result.model.ByteSize() < model.ByteSize() / 3
    ids = np.array([[0, 5, 1999, 7, 5]], np.int64)
    want, got = _run(model, ids), _run(result.model, ids)
    # Per-row scales: each row's error is within half a step of its own range, small rows too.
    step = np.abs(want).max(-1, keepdims=True) / 127
    assert np.all(np.abs(got - want) <= step / 2 + 1e-7)


def test_small_and_shared_tables_stay_with_their_reason():
    small = QuantizeEmbeddings()(_model(8))
    assert not small.modified and "small table (8 rows)" in small.details["skipped"]["embed"]
    shared = QuantizeEmbeddings()(_model(2000, shared=True))
    assert not shared.modified and "shared with Transpose" in shared.details["skipped"]["embed"]


def test_4bit_tables_gather_blocks_of_32_with_their_own_grid():
    rng = np.random.default_rng(1)
    model = _model(2000)
    table = (rng.standard_normal((2000, 64)) * rng.uniform(0.01, 3, (2000, 1))).astype(np.float32)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(table, "table"))
    result = QuantizeEmbeddings(4)(model)
    assert result.modified and result.details["embeddings_int4"] == 1
    ops = [(n.op_type, n.domain) for n in result.model.graph.node]
    assert ops == [("GatherBlockQuantized", "com.microsoft")]
    assert result.model.ByteSize() < model.ByteSize() / 5  # 4 bits + a scale and zero per 32 values
    ids = np.array([[0, 5, 1999, 7, 5]], np.int64)
    want, got = _run(model, ids), _run(result.model, ids)
    # Each block's error is within half a step of its min-max range (the searched grid may clip
    # a little less than min-max would, never more than a step).
    blocks = want.reshape(1, 5, 2, 32)
    step = (blocks.max(-1, keepdims=True) - np.minimum(blocks.min(-1, keepdims=True), 0)) / 15
    assert np.all(np.abs(got.reshape(blocks.shape) - blocks) <= step + 1e-6)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.1


def test_4bit_tables_leave_rows_of_partial_blocks_with_the_reason():
    result = QuantizeEmbeddings(4)(_model(2000))  # rows of 16 values
    assert not result.modified and "not whole blocks of 32" in result.details["skipped"]["embed"]
