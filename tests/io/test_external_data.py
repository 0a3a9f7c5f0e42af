"""External weights moved tensor by tensor (onnxopt.io.external_data): torch's one-file-per-tensor
export gathered into model.onnx.data, a model written without copying or stripping it, parameter
counts read from safetensors headers, and a location outside the folder refused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.errors import OnnxoptError
from onnxopt.io.external_data import (
    consolidate,
    externalize,
    safetensors_parameters,
    weights_as_inputs,
    without_initializers,
    write_streamed,
)


def _model(rng) -> onnx.ModelProto:
    w1 = numpy_helper.from_array(rng.normal(size=(16, 32)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y0"]),
        helper.make_node("Reshape", ["y0", "shape"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], [w1, w2, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(path, x) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_per_tensor_files_are_gathered_into_one_aligned_data_file(tmp_path):
    rng = np.random.default_rng(0)
    model, x = _model(rng), rng.normal(size=(2, 16)).astype(np.float32)
    path = tmp_path / "model.onnx"
    # torch's exporter past 2 GB: one file per tensor, named after it
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=64
    )
    expected = _run(path, x)
    assert {p.name for p in tmp_path.iterdir()} == {"model.onnx", "w1", "w2"}
    assert consolidate(path) == 2
    assert {p.name for p in tmp_path.iterdir()} == {"model.onnx", "model.onnx.data"}
    np.testing.assert_array_equal(_run(path, x), expected)
    stored = onnx.load(str(path), load_external_data=False)
    offsets = [int(e.value) for t in stored.graph.initializer for e in t.external_data if e.key == "offset"]
    assert offsets and all(o % 4096 == 0 for o in offsets)


def test_weights_already_in_the_data_file_are_left_and_a_mix_is_refused(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "model.onnx"
    onnx.save_model(
        _model(rng), str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=64
    )
    before = (tmp_path / "model.onnx.data").read_bytes()
    assert consolidate(path) == 0  # written there already: not truncated
    assert (tmp_path / "model.onnx.data").read_bytes() == before
    stored = onnx.load(str(path), load_external_data=False)
    for entry in stored.graph.initializer[1].external_data:
        if entry.key == "location":
            entry.value = "w2"
    (tmp_path / "w2").write_bytes(b"\0" * 1024)
    onnx.save_model(stored, str(path))
    with pytest.raises(ValueError, match="keeps some weights in model.onnx.data and others elsewhere"):
        consolidate(path)
    assert (tmp_path / "model.onnx.data").read_bytes() == before


def test_a_location_outside_the_folder_is_refused_before_anything_is_written(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "model.onnx"
    onnx.save_model(
        _model(rng), str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=64
    )
    stored = onnx.load(str(path), load_external_data=False)
    (tmp_path.parent / "elsewhere").write_bytes(b"\0" * 4096)
    for entry in stored.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../elsewhere"
    onnx.save_model(stored, str(path))
    with pytest.raises(OnnxoptError, match="outside the model folder"):
        consolidate(path)
    assert (tmp_path / "w2").is_file()  # nothing gathered, nothing removed


def test_a_model_is_written_streamed_without_changing_it(tmp_path):
    rng = np.random.default_rng(2)
    model, x = _model(rng), rng.normal(size=(2, 16)).astype(np.float32)
    before = model.SerializeToString()
    path = write_streamed(
        without_initializers(model), model.graph.initializer, tmp_path / "m.onnx", threshold=64
    )
    assert model.SerializeToString() == before
    stored = onnx.load(str(path), load_external_data=False)
    places = {t.name: t.data_location for t in stored.graph.initializer}
    assert places == {"w1": TensorProto.EXTERNAL, "w2": TensorProto.EXTERNAL, "shape": TensorProto.DEFAULT}
    reference = tmp_path / "ref.onnx"
    onnx.save_model(model, str(reference))
    np.testing.assert_array_equal(_run(path, x), _run(reference, x))


def test_an_inline_model_is_rewritten_with_its_weights_in_the_data_file(tmp_path):
    rng = np.random.default_rng(4)
    model, x = _model(rng), rng.normal(size=(2, 16)).astype(np.float32)
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    expected = _run(path, x)
    externalize(path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.onnx", "model.onnx.data"}
    stored = onnx.load(str(path), load_external_data=False)
    places = {t.name: t.data_location for t in stored.graph.initializer}
    # the Reshape's shape stays inline: onnxruntime's shape inference cannot read it from the file
    assert places == {"w1": TensorProto.EXTERNAL, "w2": TensorProto.EXTERNAL, "shape": TensorProto.DEFAULT}
    np.testing.assert_array_equal(_run(path, x), expected)
    with pytest.raises(ValueError, match="already keeps weights outside it"):
        externalize(path)


def test_weights_become_typed_inputs_and_small_constants_stay():
    model = _model(np.random.default_rng(3))
    typed = weights_as_inputs(model, threshold=64)
    assert [t.name for t in typed.graph.initializer] == ["shape"]  # Reshape's shape: read by inference
    assert typed.graph.initializer[0] == model.graph.initializer[2]
    inputs = {
        i.name: (i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
        for i in typed.graph.input
    }
    assert inputs == {
        "x": (TensorProto.FLOAT, [2, 16]),
        "w1": (TensorProto.FLOAT, [16, 32]),
        "w2": (TensorProto.FLOAT, [32, 8]),
    }
    assert typed.ByteSize() < model.ByteSize() / 4


def test_shape_inference_on_weights_on_disk_is_symbolic_and_adds_no_input(tmp_path, monkeypatch):
    """onnxruntime's symbolic inference read external weights relative to the working directory
    and fell back to onnx's on every model with external data (issue 28's static int8 lost its
    o_proj MatMuls to it)."""
    from onnxopt.passes.infer_shapes import InferShapes

    gamma = numpy_helper.from_array(np.ones(512, np.float32), "gamma")  # 2 KiB: on disk
    w = numpy_helper.from_array(np.ones((512, 8), np.float32), "w")
    nodes = [helper.make_node("Mul", ["x", "gamma"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 512])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], [gamma, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    stub = _on_disk(model, tmp_path / "m")
    monkeypatch.chdir(tmp_path)  # not the model's folder
    result = InferShapes()(stub)
    assert result.details["method"] == "symbolic", result.details  # it read gamma's values before
    assert [i.name for i in result.model.graph.input] == ["x"]
    assert any(v.name == "h" for v in result.model.graph.value_info)


def test_safetensors_headers_give_the_parameter_count(tmp_path):
    from safetensors.numpy import save_file

    assert safetensors_parameters(tmp_path) is None
    save_file(
        {"a": np.zeros((3, 4), np.float16), "b": np.zeros(5, np.float32)}, str(tmp_path / "m-1.safetensors")
    )
    save_file({"c": np.zeros((2, 2, 2), np.float32)}, str(tmp_path / "m-2.safetensors"))
    assert safetensors_parameters(tmp_path) == 12 + 5 + 8


def _on_disk(model, folder):
    """`model` saved with its weights in model.onnx.data and loaded back without them."""
    folder.mkdir()
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=64,
    )
    return onnx.load(str(folder / "model.onnx"), load_external_data=False)


def test_a_probe_maps_weights_on_disk_instead_of_copying_them(tmp_path, monkeypatch):
    from onnxopt.io import external_data
    from onnxopt.io.weight_store import weights_on_disk
    from onnxopt.runtime.sessions import probe_session

    rng = np.random.default_rng(3)
    model, x = _model(rng), rng.normal(size=(2, 16)).astype(np.float32)
    w1, w2 = (numpy_helper.to_array(t) for t in model.graph.initializer[:2])
    expected = [x @ w1, (x @ w1 @ w2).reshape(-1, 8)]
    stub = _on_disk(model, tmp_path / "m")

    def no_copy(*_args, **_kw):
        raise AssertionError("the weights were copied")

    monkeypatch.setattr(external_data, "write_streamed", no_copy)
    with weights_on_disk(tmp_path / "m", {"model.onnx.data"}):
        session = probe_session(stub, ["h"])
        got = session.run(["h", "y"], {"x": x})
    assert sorted(session.onnxopt_initializers[0]) == ["w1", "w2"]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_a_mapped_tensor_past_the_end_of_its_file_is_refused(tmp_path):
    from onnxopt.io.weight_store import weights_on_disk

    stub = _on_disk(_model(np.random.default_rng(4)), tmp_path / "m")
    data = tmp_path / "m" / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-4])
    with weights_on_disk(tmp_path / "m", {"model.onnx.data"}) as store, pytest.raises(OnnxoptError) as err:
        store.mapped(next(t for t in stub.graph.initializer if t.name == "w2"))
    assert "model.onnx.data ends inside tensor w2" in str(err.value)


def _anonymous_mb() -> float:
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024


def test_a_probe_on_weights_on_disk_holds_no_copy_of_them(tmp_path):
    """The weight stays in the page cache (a map of its file), not in the process's own memory:
    no copy by onnxruntime, and no prepacked one."""
    from onnxopt.io.weight_store import weights_on_disk
    from onnxopt.runtime.sessions import probe_session

    n = 4096  # one 64 MB weight
    w = numpy_helper.from_array(np.random.default_rng(5).standard_normal((n, n), dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    stub = _on_disk(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m"
    )
    before = _anonymous_mb()
    with weights_on_disk(tmp_path / "m", {"model.onnx.data"}):
        session = probe_session(stub, [])
        session.run(None, {"x": np.ones((1, n), np.float32)})
        grown = _anonymous_mb() - before
    assert grown < 32, f"{grown:.0f} MB of anonymous memory for a 64 MB weight"


def test_an_initializer_listed_as_an_input_is_typed_once(tmp_path):
    """IR < 4 and keep_initializers_as_inputs list weights among the inputs: inference on weights
    on disk must not give them a second input entry."""
    from onnxopt.passes.infer_shapes import InferShapes

    model = _model(np.random.default_rng(8))
    w1 = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info("w1", w1.data_type, list(w1.dims)))
    stub = _on_disk(model, tmp_path / "m")
    typed = weights_as_inputs(stub)
    assert [i.name for i in typed.graph.input].count("w1") == 1
    assert [i.name for i in InferShapes()(stub).model.graph.input] == ["x", "w1"]
