"""`onnxopt export --dtype fp16`: the graph's weights, cache and logits in fp16, read from the
checkpoint without an fp32 model; checked against PyTorch in fp16 at a tolerance fp16 can meet."""

from __future__ import annotations

import json

import onnx
from onnx import TensorProto

from tests.conftest import assert_clean_error
from tests.prune.test_prune_decoders import build_tiny_decoder


def test_an_fp16_export_holds_fp16_weights_and_passes_its_check(cli, tmp_path):
    hf = build_tiny_decoder("llama", tmp_path / "hf", hidden=64)
    code, out, err = cli("export", hf, "-o", tmp_path / "fp16", "--dtype", "fp16")
    assert code == 0, err
    model = onnx.load(str(tmp_path / "fp16" / "model.onnx"))
    floats = [
        t.data_type
        for t in model.graph.initializer
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
    ]
    assert floats.count(TensorProto.FLOAT16) > len(floats) / 2
    past = [i for i in model.graph.input if i.name.startswith("past_key_values")]
    assert past and all(i.type.tensor_type.elem_type == TensorProto.FLOAT16 for i in past)
    step = json.loads((tmp_path / "fp16" / "onnxopt.json").read_text())["steps"][0]
    assert step["dtype"] == "fp16" and step["atol"] == 1e-2
    assert any("tokens equal PyTorch's" in c for c in step["checks"])
    assert step["peak_rss_mb"] > 0


def test_an_unknown_dtype_is_refused_before_any_work(cli, tmp_path):
    code, _, err = cli("export", tmp_path, "-o", tmp_path / "out", "--dtype", "bf16")
    assert_clean_error(code, err, "--dtype", "fp32", "fp16")
    assert not (tmp_path / "out").exists()
