"""The export of a decoder past 2 GB of weights (export/large_export.py), run on tiny decoders by
lowering the threshold: weights in model.onnx.data, Linear weights read as exported parameters
(no folded transposed copies), checked against PyTorch like any export, optimum left as it was."""

from __future__ import annotations

import onnx
import pytest

from onnxopt.export import workflow
from onnxopt.export.large_export import LARGE_EXPORT_NOTE
from onnxopt.export.workflow import export
from tests.prune.test_prune_decoders import build_tiny_decoder


@pytest.mark.parametrize("kind", ["llama", "qwen2", "phi3"])
def test_a_decoder_past_the_threshold_is_streamed_and_still_matches_pytorch(tmp_path, monkeypatch, kind):
    from optimum.exporters.onnx import base, convert
    from optimum.exporters.tasks import TasksManager

    before = (convert.check_model_uses_external_data, base.OnnxConfig.fix_dynamic_axes)
    loader = TasksManager.get_model_from_task
    hf = build_tiny_decoder(kind, tmp_path / "hf", hidden=64)
    monkeypatch.setattr(workflow, "LARGE_EXPORT_BYTES", 0)
    result = export(str(hf), tmp_path / "out")
    assert LARGE_EXPORT_NOTE in result.notes
    assert any("256/256" in note or "tokens equal PyTorch's" in note for note in result.notes)
    assert max(result.max_abs_diff.values()) <= 1e-4
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.onnx", "model.onnx.data"} <= files
    assert not any(
        name.startswith(("onnx__", "model.")) and name != "model.onnx.data" and name != "model.onnx"
        for name in files
    )
    model = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False)
    matmul_weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul"}
    transposed = {t.name for t in model.graph.initializer if t.name.endswith(".weight_t")}
    assert transposed and transposed <= matmul_weights  # the parameters themselves, not folded copies
    assert not any(n.op_type == "Transpose" and n.input[0] in transposed for n in model.graph.node)
    assert (convert.check_model_uses_external_data, base.OnnxConfig.fix_dynamic_axes) == before
    assert TasksManager.get_model_from_task == loader


def test_the_trace_reports_each_layer_and_the_output_is_not_changed_by_it(tmp_path, monkeypatch, capsys):
    hf = build_tiny_decoder("llama", tmp_path / "hf", hidden=64)
    monkeypatch.setattr(workflow, "LARGE_EXPORT_BYTES", 0)
    seen = []

    def progress(stage, done, total):
        print(f"{stage} {done}/{total}")  # the exporter runs quieted: this must still get out
        seen.append((stage, done, total))

    export(str(hf), tmp_path / "out", on_progress=progress)
    traced = [(done, total) for stage, done, total in seen if stage == "tracing hf's layers"]
    assert traced[:3] == [(0, 2), (1, 2), (2, 2)]  # 2 layers: entered, entered, the last left
    assert "tracing hf's layers 2/2" in capsys.readouterr().out


def test_an_export_past_a_gigabyte_keeps_its_weights_in_the_data_file(tmp_path, monkeypatch):
    hf = build_tiny_decoder("llama", tmp_path / "hf", hidden=64)
    monkeypatch.setattr(workflow, "EXTERNAL_FROM_BYTES", 0)
    result = export(str(hf), tmp_path / "out")
    assert LARGE_EXPORT_NOTE not in result.notes  # optimum's own export, tied weights deduplicated
    assert max(result.max_abs_diff.values()) <= 1e-4
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.onnx", "model.onnx.data"} <= files
    model = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external
    assert not any(len(t.raw_data) >= 1024 for t in model.graph.initializer)


def test_torch_writes_no_weight_into_the_protobuf_inside_weights_beside(tmp_path):
    import numpy as np
    import onnxruntime as ort
    import torch

    from onnxopt.export.large_export import weights_beside

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    x = torch.randn(2, 64)
    path = tmp_path / "model.onnx"
    encode = torch._C.Graph._export_onnx
    with weights_beside():
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"])
    assert torch._C.Graph._export_onnx is encode  # put back
    model = onnx.load(str(path), load_external_data=False)
    assert [i.name for i in model.graph.input] == ["x"]  # the parameters are initializers again
    places = {t.name: t.data_location for t in model.graph.initializer}
    assert places["0.weight"] == onnx.TensorProto.EXTERNAL  # 16 KiB: in model.onnx.data
    assert places["2.bias"] == onnx.TensorProto.DEFAULT  # 16 bytes: inline
    assert (tmp_path / "model.onnx.data").stat().st_size >= 64 * 64 * 4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], module(x).detach().numpy(), atol=1e-6)
