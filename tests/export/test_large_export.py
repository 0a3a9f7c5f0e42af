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
