import json

import numpy as np
import onnxruntime as ort
import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.export import workflow as export_module
from onnxopt.export.workflow import resolve_source
from tests.conftest import assert_clean_error


def test_export_writes_model_tokenizer_and_manifest(tiny_bert_onnx):
    names = {p.name for p in tiny_bert_onnx.iterdir()}
    assert {"model.onnx", "onnxopt.json", "config.json", "tokenizer.json", "vocab.txt"} <= names
    manifest = json.loads((tiny_bert_onnx / "onnxopt.json").read_text())
    assert manifest["task"] == "feature-extraction"
    step = manifest["steps"][0]
    assert step["step"] == "export"
    assert 0 <= step["max_abs_diff"]["last_hidden_state"] <= 1e-4
    assert manifest["libraries"]["onnxruntime"] == ort.__version__


def test_export_runs_in_onnxruntime(tiny_bert_onnx):
    session = ort.InferenceSession(str(tiny_bert_onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 10, 11, 3]], dtype=np.int64)
    out = session.run(
        None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    )[0]
    assert out.shape == (1, 4, 32)
    assert np.isfinite(out).all()


def test_export_cli_prints_difference(cli, tiny_bert_hf, tmp_path):
    code, out, err = cli("export", tiny_bert_hf, "-o", tmp_path / "m", "--opset", "17")
    assert code == 0, err
    assert "max |onnx - torch|" in out
    assert json.loads((tmp_path / "m" / "onnxopt.json").read_text())["opset"] == 17


def test_export_above_atol_fails_and_leaves_nothing(cli, tiny_bert_hf, tmp_path, monkeypatch):
    from onnxopt.export.torch_check import TorchCheck

    monkeypatch.setattr(
        export_module, "compare_with_torch", lambda *a, **k: TorchCheck({"last_hidden_state": 0.5})
    )
    code, _out, err = cli("export", tiny_bert_hf, "-o", tmp_path / "m")
    assert_clean_error(code, err, "differ from PyTorch by 5.00e-01", "--atol")
    assert list(tmp_path.iterdir()) == []


def test_export_missing_local_folder(cli, tmp_path):
    code, _out, err = cli("export", tmp_path / "nope", "-o", tmp_path / "m")
    assert_clean_error(code, err, "does not exist")
    assert not (tmp_path / "m").exists()


def test_export_folder_without_config(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _out, err = cli("export", tmp_path / "empty", "-o", tmp_path / "m")
    assert_clean_error(code, err, "no config.json")


def test_export_refuses_existing_output(cli, tiny_bert_hf, tiny_bert_onnx):
    code, _out, err = cli("export", tiny_bert_hf, "-o", tiny_bert_onnx)
    assert_clean_error(code, err, "already exists", "--overwrite")


def test_hub_ids_are_passed_through_but_paths_are_not():
    source = resolve_source("org/model")
    assert (source.path, source.is_local, source.inputs) == ("org/model", False, [])
    with pytest.raises(OnnxoptError, match="does not exist"):
        resolve_source("./not/here")


def test_bundled_model_is_found_offline():
    source = resolve_source(None)
    assert source.is_local and source.path.endswith("model") and source.shown.startswith("all-MiniLM-L6-v2")


def test_bundled_decoder_is_the_installed_gguf_file():
    source = resolve_source(None, "smollm2")
    assert source.is_local and source.gguf is not None and source.gguf.suffix == ".gguf"
    assert source.gguf.is_file() and source.inputs == [source.gguf]


def test_model_and_bundled_together_are_refused(tmp_path):
    with pytest.raises(OnnxoptError, match="not both"):
        resolve_source(str(tmp_path), "smollm2")


def test_remote_code_never_runs_without_the_flag(cli, tmp_path):
    """A folder whose config points at its own Python code: refused, and the code never runs."""
    import json

    from tests.conftest import build_tiny_bert

    folder = build_tiny_bert(tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="my-bert", auto_map={"AutoConfig": "custom.MyConfig", "AutoModel": "custom.MyModel"}
    )
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (folder / "custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertModel\n"
        "class MyConfig(BertConfig):\n    model_type = 'my-bert'\n"
        "class MyModel(BertModel):\n    config_class = MyConfig\n"
    )
    out = tmp_path / "out"
    code, _o, err = cli("export", folder, "-o", out)
    assert_clean_error(code, err, "ships its own model code", "--trust-remote-code")
    assert not marker.exists() and not out.exists()
    # With the flag the code runs (then optimum has no ONNX config for the custom type: a clean error).
    code, _o, err = cli("export", folder, "-o", out, "--trust-remote-code")
    assert marker.exists()
    assert code == 0 or "custom or unsupported architecture" in err
