import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files, saving, text_graphs
from onnxopt.io.outputs import check_output, staged_dir


def test_saved_ir_version_loads_in_the_installed_runtime(tmp_path):
    model = text_graphs.load("linear")
    model.ir_version = onnx.IR_VERSION + 5  # newer than anything the runtime reads
    path = saving.save(model, tmp_path)
    saved = onnx.load(str(path))
    assert saved.ir_version <= saving.runtime_max_ir_version()
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_runtime_max_ir_version_is_probed():
    assert 8 <= saving.runtime_max_ir_version() <= onnx.IR_VERSION


def _reduce_model() -> onnx.ModelProto:
    """x @ w (16 KiB of weights) summed over its last axis, the axes a small int64 constant."""
    w = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096, "w")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("ReduceSum", ["h", "axes"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 64])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 1])
    graph = helper.make_graph(nodes, "reduce", [x], [y], [w, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_large_models_go_external(tmp_path, monkeypatch):
    monkeypatch.setattr(saving, "_TWO_GB", 10)  # pretend every model is over 2 GB
    path = saving.save(_reduce_model(), tmp_path)
    assert (tmp_path / "model.onnx.data").is_file()
    ref = model_files.resolve(tmp_path)
    assert ref.size_bytes() > path.stat().st_size
    loaded = model_files.load(ref)
    assert onnx.numpy_helper.to_array(loaded.graph.initializer[0]).shape == (64, 64)


def test_small_constants_stay_inline_where_the_runtime_reads_them(tmp_path, monkeypatch):
    """ReduceSum's axes from external data: onnxruntime refused to load the model at all."""
    monkeypatch.setattr(saving, "_TWO_GB", 10)
    path = saving.save(_reduce_model(), tmp_path)
    saved = onnx.load(str(path), load_external_data=False).graph.initializer
    assert {t.name: t.data_location for t in saved} == {
        "w": onnx.TensorProto.EXTERNAL,
        "axes": onnx.TensorProto.DEFAULT,
    }
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": np.ones((2, 64), np.float32)})[0]
    np.testing.assert_allclose(got, np.full((2, 1), (np.arange(64 * 64) / 4096).sum()), rtol=1e-5)


def test_staged_dir_removes_everything_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "half.onnx").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_replaces_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("x")
    with staged_dir(out) as tmp:
        (tmp / "new").write_text("y")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["new"]


def test_check_output_refuses_input_and_parent_of_input(tmp_path):
    src = tmp_path / "m" / "model.onnx"
    src.parent.mkdir()
    src.write_text("x")
    with pytest.raises(OnnxoptError, match="would overwrite the input"):
        check_output(tmp_path / "m", [src], overwrite=True)
    with pytest.raises(OnnxoptError, match="already exists"):
        check_output(tmp_path / "m", [], overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OnnxoptError, match="not a folder"):
        check_output(tmp_path / "file", [], overwrite=True)


def test_unwritable_output_location(tmp_path):
    # A path under a regular file cannot be created, even by root (for whom permission bits do not bind).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OnnxoptError, match="cannot write"), staged_dir(blocker / "sub" / "out"):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
