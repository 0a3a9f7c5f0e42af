"""ModelInfo (onnxopt.io.model_info): each fact of the tiny models right, config.json read once,
and a hostile config.json refused with the messages the readers gave before."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.io import files, hf_config, model_files
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.parts import SEQ2SEQ_FILES


def _count_config_reads(monkeypatch) -> list[str]:
    """Every config.json onnxopt's bounded reader opens, by path."""
    seen, real = [], hf_config.read_json

    def counting(folder, name, what=None):
        if name == "config.json":
            seen.append(str(folder))
        return real(folder, name, what)

    monkeypatch.setattr(hf_config, "read_json", counting)
    return seen


@pytest.fixture
def parts_folder(tmp_path, tiny_bert_onnx, tiny_gpt2_onnx) -> Path:
    """A folder in parts by optimum's names: the BERT graph as encoder, the GPT-2 with past as both
    decoders (enough for the facts; not a model that runs), GPT-2's config.json."""
    folder = tmp_path / "parts"
    folder.mkdir()
    shutil.copy(tiny_bert_onnx / "model.onnx", folder / SEQ2SEQ_FILES[0])
    for name in SEQ2SEQ_FILES[1:]:
        shutil.copy(tiny_gpt2_onnx / "model.onnx", folder / name)
    shutil.copy(tiny_gpt2_onnx / "config.json", folder / "config.json")
    return folder


def test_encoder_facts(tiny_bert_onnx, monkeypatch):
    reads = _count_config_reads(monkeypatch)
    info = ModelInfo.read(tiny_bert_onnx)
    assert reads == []  # nothing read until asked
    assert (info.kind, info.in_parts, info.has_cache, info.cache) == ("encoder", False, False, None)
    assert info.model_type == "bert" and info.task == "feature-extraction"
    assert (info.layers, info.heads, info.kv_heads, info.head_size, info.hidden_size) == (2, 2, None, 16, 32)
    assert info.vocab_size == info.config["vocab_size"] > 50
    assert info.max_positions == (512, "max_position_embeddings")
    assert info.external_data is False and info.files == [tiny_bert_onnx / "model.onnx"]
    assert info.ref.onnx_path == tiny_bert_onnx / "model.onnx" and info.graph.graph.node
    assert reads == [str(tiny_bert_onnx)]  # read once, whatever was asked


def test_decoder_facts(tiny_gpt2_onnx, monkeypatch):
    reads = _count_config_reads(monkeypatch)
    info = ModelInfo.read(model_files.resolve(tiny_gpt2_onnx))
    assert (info.kind, info.has_cache, info.in_parts) == ("decoder", True, False)
    assert info.cache.layers == 2 and info.model_type == "gpt2" and info.task == "text-generation"
    assert (info.layers, info.heads, info.kv_heads, info.head_size) == (2, 2, 2, 16)
    assert info.max_positions == (256, "n_positions") and info.end_token == 1
    assert info.decoder_start_token == 0 and info.config["n_embd"] == 32
    assert reads == [str(tiny_gpt2_onnx)]


def test_onnx_file_without_manifest_has_no_config(tmp_path, tiny_gpt2_onnx):
    path = shutil.copy(tiny_gpt2_onnx / "model.onnx", tmp_path / "bare.onnx")
    info = ModelInfo.read(path)
    assert info.folder is None and info.config == {} and info.kind == "decoder" and info.layers == 2
    assert ModelInfo.read(None).config == {}


def test_parts_facts(parts_folder, monkeypatch):
    reads = _count_config_reads(monkeypatch)
    info = ModelInfo.read(parts_folder)
    assert (info.kind, info.in_parts, info.has_cache) == ("encoder-decoder", True, True)
    assert info.ref.onnx_path == parts_folder / SEQ2SEQ_FILES[0]
    assert info.files == [parts_folder / name for name in SEQ2SEQ_FILES]
    assert info.cache.layers == 2 and info.model_type == "gpt2"
    assert not ModelInfo.read(model_files.part_ref(parts_folder)).in_parts  # a ref is one graph
    assert reads == [str(parts_folder)]


def _hostile(tmp_path, tiny_bert_onnx, write) -> Path:
    folder = shutil.copytree(tiny_bert_onnx, tmp_path / "m")
    (folder / "config.json").unlink()
    write(folder / "config.json")
    return folder


def test_config_not_an_object(tmp_path, tiny_bert_onnx):
    folder = _hostile(tmp_path, tiny_bert_onnx, lambda p: p.write_text(json.dumps([1, 2])))
    with pytest.raises(OnnxoptError, match="holds a JSON list, not an object"):
        _ = ModelInfo.read(folder).model_type


def test_config_too_big(tmp_path, tiny_bert_onnx, monkeypatch):
    monkeypatch.setattr(files, "JSON_LIMIT", 1000)
    folder = _hostile(tmp_path, tiny_bert_onnx, lambda p: p.write_text(json.dumps({"x": "y" * 2000})))
    with pytest.raises(OnnxoptError, match="is 2,009 bytes, over the 1,000 bytes onnxopt"):
        _ = ModelInfo.read(folder).config


def test_config_links_outside(tmp_path, tiny_bert_onnx):
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    folder = _hostile(tmp_path, tiny_bert_onnx, lambda p: os.symlink(outside, p))
    with pytest.raises(OnnxoptError, match="links to .*, outside the model folder"):
        _ = ModelInfo.read(folder).config


def test_bad_config_value(tmp_path, tiny_bert_onnx):
    folder = _hostile(tmp_path, tiny_bert_onnx, lambda p: p.write_text('{"vocab_size": -3}'))
    with pytest.raises(OnnxoptError, match="config.json: vocab_size is -3; expected a positive integer"):
        _ = ModelInfo.read(folder).vocab_size


# Calls that read a file's contents; `.is_file()` and messages that name config.json are not reads.
_READS = {"open", "read_text", "read_bytes", "read_json", "loads", "load", "from_pretrained", "read_config"}
_OPENER = "onnxopt/io/hf_config.py"
# read_config's callers: ModelInfo, and genai_config, which model_files (under ModelInfo) calls.
_CALLERS = ("onnxopt/io/model_info.py", "onnxopt/io/genai_config.py")


def _config_reads(path: Path, may_call: bool) -> list[int]:
    """Lines of `path` whose file-reading calls name config.json, or that use AutoConfig (which
    opens it), or that call read_config unless `may_call`."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute) and "AutoConfig" in ast.unparse(node).split("."):
            found.append(node.lineno)
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        named = any(isinstance(n, ast.Constant) and n.value == "config.json" for n in ast.walk(node))
        if func in _READS and (named or func == "read_config" and not may_call):
            found.append(node.lineno)
    return found


def test_config_json_is_opened_in_one_module():
    root = Path(__file__).resolve().parents[2]
    wrong = []
    for path in sorted((root / "onnxopt").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name != _OPENER:
            wrong += [f"{name}:{line}" for line in _config_reads(path, name in _CALLERS)]
    assert not wrong, "config.json read outside onnxopt.io.hf_config (ask ModelInfo): " + ", ".join(wrong)
