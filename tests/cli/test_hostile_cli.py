"""Hostile command lines of issue 26 (its findings outside GGUF, search, generation and perplexity):
each bad input is one error line, exit 2, within seconds, with the inputs and everything outside
OUT left as they were. Each test failed on the code before the fix.
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from onnxopt.io.manifest import Manifest
from onnxopt.io.ownership import made_by_onnxopt
from tests.conftest import REPO, assert_clean_error

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


# 2. --int4 --max-drop on an encoder: the search scores perplexity, which needs a decoder.


def test_int4_max_drop_on_an_encoder_is_refused_before_any_work(timed_cli, tiny_bert_onnx, tmp_path):
    before = _sha(tiny_bert_onnx)
    code, _o, err = timed_cli("quantize", tiny_bert_onnx, "--int4", "--max-drop", "1", "-o", tmp_path / "q")
    assert_clean_error(code, err, "--int4 --max-drop measures the rise in perplexity", "is an encoder")
    assert _sha(tiny_bert_onnx) == before and list(tmp_path.iterdir()) == []


# 3. --opset outside what the exporter writes; the exporter's own prints kept off stdout.


@pytest.mark.parametrize("opset", ["99", "6", "21"])
def test_export_opset_outside_the_exporters_range_is_refused_at_once(
    timed_cli, tiny_bert_hf, tmp_path, opset
):
    before = _sha(tiny_bert_hf)
    code, stdout, err = timed_cli(
        "export", tiny_bert_hf, "-o", tmp_path / "m", "--opset", opset, "--json", "-"
    )
    assert_clean_error(code, err, "--opset must be an integer in [7, 20]", f"got {opset}")
    assert stdout == "" and _sha(tiny_bert_hf) == before and list(tmp_path.iterdir()) == []


def test_export_opset_range_is_torchs():
    """The range checked before torch is imported is the one torch's TorchScript exporter takes
    (optimum runs that one), so a torch upgrade that widens it fails here, not for users."""
    from torch.onnx import _constants

    from onnxopt.export.config import MAX_OPSET, MIN_OPSET

    assert (MIN_OPSET, MAX_OPSET) == (
        _constants.ONNX_MIN_OPSET,
        _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET,
    )


_PRINTING_EXPORTER = """
import ctypes, os, sys
import optimum.exporters.onnx as exporters

def main_export(*args, **kwargs):  # fails as torch's exporter does: its graph printed from C first
    os.write(1, b"Torch IR graph at exception: graph(...)\\n")
    ctypes.CDLL(None).printf(b"buffered in C stdio\\n")
    print("from Python")
    raise RuntimeError("the exporter failed")

exporters.main_export = main_export
from onnxopt.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_exporters_prints_never_reach_stdout(tiny_bert_hf, tmp_path):
    """`--json -` keeps stdout for the JSON: what the exporter prints from C++ (file descriptor 1,
    past sys.stdout) once put 124 KB of torch graph there."""
    import subprocess
    import sys

    args = ["export", str(tiny_bert_hf), "-o", str(tmp_path / "m"), "--json", "-"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's onnxopt, whatever is installed
    command = [sys.executable, "-c", _PRINTING_EXPORTER, *args]
    done = subprocess.run(command, capture_output=True, timeout=120, cwd=tmp_path, env=env)
    assert done.stdout == b""
    assert_clean_error(done.returncode, done.stderr.decode(), "export failed: the exporter failed")
    assert not (tmp_path / "m").exists()


# 4. --json checked before the work, also against the command's own output folder.


@pytest.mark.parametrize(
    ("json_path", "why"),
    [
        ("q", "--json {tmp}/q is the output folder {tmp}/q"),
        ("q/model.onnx", "lies inside the output folder"),
        ("q/onnxopt.json", "lies inside the output folder"),
        ("a" * 250 + ".json", "the file name is 255 bytes, over the"),
        ("d" * 300 + "/r.json", "a folder name in it is 300 bytes (at most 255)"),
    ],
)
def test_quantize_json_that_cannot_be_written_is_refused_before_the_work(
    timed_cli, tiny_bert_onnx, tmp_path, json_path, why
):
    out = tmp_path / "q"
    before = _sha(tiny_bert_onnx)
    code, stdout, err = timed_cli(
        "quantize", tiny_bert_onnx, "--dynamic", "-o", out, "--json", tmp_path / json_path
    )
    assert_clean_error(code, err, why.format(tmp=tmp_path))
    assert stdout == "" and _sha(tiny_bert_onnx) == before and list(tmp_path.iterdir()) == []


def test_json_into_an_existing_output_is_refused_and_leaves_it_whole(
    cli, timed_cli, tiny_bert_onnx, tmp_path
):
    """--json OUT/model.onnx with --overwrite once replaced the new model by the JSON report."""
    out = tmp_path / "q"
    code, _o, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", out)
    assert code == 0, err
    before = _sha(tmp_path, tiny_bert_onnx)
    for name in ("model.onnx", "onnxopt.json", "report.json"):
        code, _o, err = timed_cli(
            "quantize", tiny_bert_onnx, "--dynamic", "-o", out, "--overwrite", "--json", out / name
        )
        assert_clean_error(code, err, f"--json {out / name} lies inside the output folder {out}")
    assert _sha(tmp_path, tiny_bert_onnx) == before


@pytest.mark.parametrize("command", ["export", "optimize", "prune", "run", "search"])
def test_every_command_with_an_output_checks_json_against_it(timed_cli, tiny_bert_onnx, tmp_path, command):
    out = tmp_path / "o"
    model = str(tiny_bert_onnx)
    args = {
        "export": ["export", model],
        "optimize": ["optimize", model],
        "prune": ["prune", model, "--sparsity", "0.5"],
        "run": ["run", _recipe(tmp_path, model)],
        "search": ["search", model, "--max-drop", "1", "--data", _sts(tmp_path)],
    }[command]
    before = _sha(tmp_path, tiny_bert_onnx)
    # A run or search folder is never replaced whole: a report may sit beside what they write there,
    # not over it (their step folders, OUT/best); every other OUT is replaced whole.
    where = {"run": out / "1-optimize", "search": out / "best"}.get(command, out)
    json_path = where / "r.json"
    code, _o, err = timed_cli(*args, "-o", out, "--json", json_path)
    assert_clean_error(code, err, f"--json {json_path} lies inside the output folder {where}")
    assert _sha(tmp_path, tiny_bert_onnx) == before and not out.exists()


def test_a_run_folder_takes_a_report_beside_its_steps(cli, tiny_bert_onnx, tmp_path):
    """`run` and `search` OUTs are resumable folders onnxopt adds to, never replaced whole."""
    out = tmp_path / "o"
    code, _o, err = cli("run", _recipe(tmp_path, str(tiny_bert_onnx)), "-o", out, "--json", out / "r.json")
    assert code == 0, err
    assert json.loads((out / "r.json").read_text()) and (out / "1-optimize" / "model.onnx").is_file()


def _recipe(folder: Path, model: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(f"model: {model}\nsteps:\n  - optimize: {{}}\n")
    return path


def _sts(folder: Path) -> Path:
    path = folder / "sts.tsv"
    path.write_text("sentence1\tsentence2\tscore\na cat\ta dog\t2.0\n")
    return path


# 5. Quantizing a quantized model: refused, naming what it holds.


@pytest.fixture(scope="module")
def tiny_bert_int4(tmp_path_factory, tiny_bert_onnx):
    from onnxopt.quantize.workflow import quantize

    out = tmp_path_factory.mktemp("onnx") / "int4"
    quantize(tiny_bert_onnx, out, mode="int4", smooth=False)
    return out


@pytest.mark.parametrize("mode", ["--int4", "--dynamic", "--static"])
def test_quantizing_an_int4_model_again_is_refused(timed_cli, tiny_bert_int4, tmp_path, mode):
    before = _sha(tiny_bert_int4)
    code, _o, err = timed_cli("quantize", tiny_bert_int4, mode, "-o", tmp_path / "q")
    assert_clean_error(
        code, err, "is already quantized (it has MatMulNBits)", "quantize the fp32 model it was made from"
    )
    assert _sha(tiny_bert_int4) == before and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["--int4", "--static"])
def test_quantizing_an_int8_model_again_is_refused(timed_cli, tiny_bert_dynamic, tmp_path, mode):
    before = _sha(tiny_bert_dynamic)
    code, _o, err = timed_cli("quantize", tiny_bert_dynamic, mode, "-o", tmp_path / "q")
    assert_clean_error(code, err, "is already quantized (it has DynamicQuantizeLinear")
    assert _sha(tiny_bert_dynamic) == before and list(tmp_path.iterdir()) == []


def test_a_quantize_step_in_the_manifest_is_enough(timed_cli, model_copy, tmp_path):
    """int8 embedding tables alone leave no quantized op in the graph: the manifest tells."""
    manifest = json.loads((model_copy / "onnxopt.json").read_text())
    manifest["steps"].append({"step": "quantize-dynamic"})
    (model_copy / "onnxopt.json").write_text(json.dumps(manifest))
    code, _o, err = timed_cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "T is already quantized (its onnxopt.json records quantize-dynamic)")
    assert not (tmp_path / "q").exists()


def test_a_model_that_grew_is_not_reported_smaller():
    from onnxopt.report.tables import size_change

    assert size_change(400, 100) == "4.0x smaller"
    assert size_change(133_043, 152_460) == "15% larger"  # the int4 of int4 of issue 26
    assert size_change(100, 100) == "the same size"
