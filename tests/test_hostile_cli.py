"""Hostile command lines of issue 26 (its findings outside GGUF, search, generation and perplexity):
each bad input is one error line, exit 2, within seconds, with the inputs and everything outside
OUT left as they were. Each test failed on the code before the fix.
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from onnxopt.io.manifest import Manifest
from onnxopt.io.ownership import made_by_onnxopt
from tests.conftest import assert_clean_error

FAST = 10.0  # seconds a refused command may take


def _sha(*roots: Path) -> dict[str, str]:
    """Every file under the roots by content, so a test sees any write, deletion or addition."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*")))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


@pytest.fixture
def timed_cli(cli):
    """The in-process CLI, refused within FAST seconds."""

    def run(*args):
        start = time.perf_counter()
        result = cli(*args)
        assert time.perf_counter() - start < FAST, result[2]
        return result

    return run


@pytest.fixture
def model_copy(tiny_bert_onnx, tmp_path):
    return shutil.copytree(tiny_bert_onnx, tmp_path / "T")


# 1. --overwrite takes only a manifest onnxopt wrote, over a folder it alone filled, as proof.


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        ("", "onnxopt.json is not a manifest onnxopt wrote (not JSON)"),
        ("not json at all", "(not JSON)"),
        ("[1, 2]", "(a JSON list, not an object)"),
        ('{"steps": []}', "(no 'source')"),
        ('{"tool": "other", "source": "x"}', "(tool is 'other')"),
    ],
)
def test_overwrite_refuses_a_folder_whose_manifest_onnxopt_did_not_write(
    timed_cli, tiny_bert_onnx, tmp_path, manifest, why
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "onnxopt.json").write_text(manifest)
    before = _sha(tmp_path, tiny_bert_onnx)
    code, _o, err = timed_cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out, "--overwrite")
    assert_clean_error(code, err, f"output {out} is not an onnxopt output: ", why)
    assert _sha(tmp_path, tiny_bert_onnx) == before


def test_overwrite_refuses_an_onnxopt_output_holding_a_file_it_did_not_write(
    cli, timed_cli, tiny_bert_onnx, tmp_path
):
    out = tmp_path / "q"
    code, _o, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out)
    assert code == 0, err
    (out / "notes.txt").write_text("mine")
    before = _sha(tmp_path, tiny_bert_onnx)
    code, _o, err = timed_cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out, "--overwrite")
    assert_clean_error(code, err, "it holds notes.txt, which its onnxopt.json does not list")
    assert _sha(tmp_path, tiny_bert_onnx) == before
    (out / "notes.txt").unlink()  # without it, the output is onnxopt's again
    code, _o, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out, "--overwrite")
    assert code == 0, err


def test_made_by_onnxopt_reads_what_onnxopt_writes(tiny_bert_onnx, tmp_path):
    """The public check other modules reuse: an export is onnxopt's, and so is a manifest written
    before it listed the files (structure alone); a folder without one is not."""
    manifest = json.loads((tiny_bert_onnx / "onnxopt.json").read_text())
    assert manifest["tool"] == "onnxopt" and "model.onnx" in manifest["files"]
    assert made_by_onnxopt(tiny_bert_onnx) is None
    older = shutil.copytree(tiny_bert_onnx, tmp_path / "older")
    del manifest["tool"], manifest["files"]
    (older / "onnxopt.json").write_text(json.dumps(manifest))
    (older / "extra.txt").write_text("no list to check it against")
    assert made_by_onnxopt(older) is None
    Manifest(source="m", task="feature-extraction", opset=17).save(tmp_path / "older")  # not staged
    assert "files" not in json.loads((older / "onnxopt.json").read_text())  # a user's file stays theirs
    assert made_by_onnxopt(tmp_path) == "no onnxopt.json"
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "onnxopt.json").symlink_to(tiny_bert_onnx / "onnxopt.json")
    assert made_by_onnxopt(tmp_path / "link") == "onnxopt.json is not a regular file"
