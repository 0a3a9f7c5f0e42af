"""Hostile model folders: files that are not regular files inside the folder, damaged configs and
manifests, limits the model cannot take, structures a pass cannot apply, and model kinds onnxopt
does not handle. Each ends in one line naming the problem, exit 2, within seconds; each is a
finding of issue 14 that failed on the code before it.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxopt.io import text_graphs
from tests.conftest import _WORDS, assert_clean_error, error_lines

FAST = ("--batch", "1", "--seq-len", "8", "--runs", "1", "--min-time", "0", "--warmup", "0")


@pytest.fixture
def model_copy(tiny_bert_onnx, tmp_path):
    return shutil.copytree(tiny_bert_onnx, tmp_path / "T")


def _onnxopt(*args, timeout=60):
    code = "import sys; from onnxopt.cli.app import entry; sys.argv[0] = 'onnxopt'; entry()"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    return result, time.perf_counter() - start


def test_a_fifo_model_file_is_refused_without_blocking(model_copy):
    (model_copy / "model.onnx").unlink()
    os.mkfifo(model_copy / "model.onnx")
    result, seconds = _onnxopt("inspect", model_copy)
    assert result.returncode == 2 and "model.onnx is a FIFO, not a regular file" in result.stderr
    assert seconds < 10


def test_a_model_file_linked_to_a_device_is_refused(cli, model_copy, tmp_path):
    (model_copy / "model.onnx").unlink()
    (model_copy / "model.onnx").symlink_to("/dev/zero")
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "links to /dev/zero, outside the model folder")
    code, _o, err = cli("inspect", "/dev/zero")
    assert_clean_error(code, err, "model file /dev/zero is a device, not a regular file")


def test_sidecar_links_out_of_the_folder_are_never_copied(cli, model_copy, tmp_path):
    """extra.json -> a file outside (say /etc/passwd) used to be copied into the output as a
    regular file: exfiltration through an output folder."""
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0")
    (model_copy / "extra.json").symlink_to(secret)
    out = tmp_path / "q"
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", out)
    assert_clean_error(code, err, "extra.json links to", "outside the model folder")
    assert not out.exists()
    copies = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p != secret]
    assert not any(p.read_bytes() == b"root:x:0:0" for p in copies)


def test_a_symlink_loop_in_a_module_folder_is_one_short_line(cli, model_copy, tmp_path):
    pooling = model_copy / "1_Pooling"
    pooling.mkdir()
    (pooling / "config.json").write_text("{}")
    (pooling / "loop").symlink_to(pooling)
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "1_Pooling/loop is a symbolic link")
    assert len(err) < 400 and "free some space" not in err
    (pooling / "loop").unlink()
    (pooling / "a.json").symlink_to(pooling / "b.json")
    (pooling / "b.json").symlink_to(pooling / "a.json")
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "a.json")
    assert len(err) < 400 and "free some space" not in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "config.json is not valid JSON"),
        ("[1, 2]", "config.json holds a JSON list, not an object"),
    ],
)
def test_a_damaged_config_is_named(cli, model_copy, tmp_path, text, message):
    (model_copy / "config.json").write_text(text)
    code, _o, err = cli("bench", model_copy, *FAST)
    assert_clean_error(code, err, message)
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, message)


def test_a_zero_vocabulary_is_named(cli, model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    (model_copy / "config.json").write_text(json.dumps({**config, "vocab_size": 0}))
    code, _o, err = cli("bench", model_copy, *FAST)
    assert_clean_error(code, err, "vocab_size is 0; expected a positive integer")
    (model_copy / "config.json").write_text(json.dumps({**config, "vocab_size": 10**6}))
    code, _o, err = cli("bench", model_copy, *FAST)
    assert_clean_error(code, err, "vocab_size 1000000", "the embedding table has")


@pytest.mark.parametrize("runtime", ["garbage", {"selected": "garbage"}, {"tuned": {"cpu": 3}}])
def test_a_garbage_runtime_in_the_manifest_is_named(cli, model_copy, runtime):
    manifest = json.loads((model_copy / "onnxopt.json").read_text())
    (model_copy / "onnxopt.json").write_text(json.dumps({**manifest, "runtime": runtime}))
    code, _o, err = cli("bench", model_copy, *FAST)
    assert_clean_error(code, err, "onnxopt.json is damaged")
    code, _o, err = cli("eval", model_copy, "--reference", model_copy, "--limit", "2")
    assert_clean_error(code, err, "onnxopt.json is damaged")


def test_an_absurd_fixed_input_dim_is_refused_before_allocating(cli, tmp_path):
    model = text_graphs.load("linear")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10**12
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    code, _o, err = cli("bench", path, *FAST)
    assert_clean_error(code, err, "would need", "GiB at batch 1")
    assert "MemoryError" not in err


def test_a_sequence_past_the_position_table_names_the_limit(cli, model_copy, tmp_path):
    code, _o, err = cli(
        "bench", model_copy, "--seq-len", "600", "--batch", "1", "--runs", "1", "--min-time", "0"
    )
    assert_clean_error(
        code, err, "--seq-len 600 exceeds", "max_position_embeddings 512", "--seq-len 512 or less"
    )
    assert "\x1b[" not in err and "onnxruntime" not in err  # no red onnxruntime log line beside it
    code, _o, err = cli("quantize", model_copy, "--static", "--seq-len", "1000", "-o", tmp_path / "q")
    assert_clean_error(code, err, "--seq-len 1000 exceeds")


def test_onnxruntime_logs_never_reach_the_terminal(tiny_bert_onnx, tmp_path):
    """A model onnxruntime fails to run: its own ERROR log line (red, ANSI codes even in a file)
    used to print beside onnxopt's message."""
    model = onnx.load(str(tiny_bert_onnx / "model.onnx"))
    folder = tmp_path / "bad"
    shutil.copytree(tiny_bert_onnx, folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))  # no position limit known
    onnx.save(model, str(folder / "model.onnx"))
    result, _s = _onnxopt(
        "bench", folder, "--seq-len", "600", "--batch", "1", "--runs", "1", "--min-time", "0"
    )
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1, result.stderr
    assert "\x1b[" not in result.stderr and "[E:onnxruntime" not in result.stderr


def test_a_bad_tokenizer_fails_export_before_the_exporter_runs(cli, tiny_bert_hf, tmp_path, monkeypatch):
    source = shutil.copytree(tiny_bert_hf, tmp_path / "src")
    (source / "tokenizer.json").write_text("{ this is not a tokenizer")
    from onnxopt.export import workflow as export

    monkeypatch.setattr(export, "_run_exporter", lambda *a, **k: pytest.fail("exported before checking"))
    start = time.perf_counter()
    code, _o, err = cli("export", source, "-o", tmp_path / "out")
    assert_clean_error(code, err, "holds no usable tokenizer", str(source))
    assert time.perf_counter() - start < 10 and not (tmp_path / "out").exists()


def test_an_image_model_is_named_as_such(cli, tmp_path, monkeypatch):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path / "vit"
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=16)  # fmt: skip
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    from onnxopt.export import workflow as export

    monkeypatch.setattr(export, "_run_exporter", lambda *a, **k: pytest.fail("exported an image model"))
    code, _o, err = cli("export", folder, "-o", tmp_path / "out")
    assert_clean_error(code, err, "is not a text model", "ViTForImageClassification", "image or audio")
    assert "tmp-" not in err  # no temporary folder named


def _tiny_albert(folder: Path) -> Path:
    import torch
    from transformers import AlbertConfig, AlbertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(_WORDS))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = AlbertConfig(
        vocab_size=len(vocab),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    AlbertModel(config).eval().save_pretrained(folder)
    return folder


def test_prune_leaves_shared_layers_whole_and_says_so(cli, tmp_path):
    """ALBERT's layers share one set of weights: slicing the first use grew the model (83,584 ->
    100,260 parameters) while the report said -50% and `inspect` said pruned."""
    code, _o, err = cli("export", _tiny_albert(tmp_path / "hf"), "-o", tmp_path / "fp32")
    assert code == 0, err
    code, _o, err = cli("prune", tmp_path / "fp32", "--sparsity", "0.5", "--calib", "4", "-o", tmp_path / "p")
    assert_clean_error(code, err, "shares weights between its layers", "as ALBERT's do")
    assert not (tmp_path / "p").exists()


def test_prune_figures_come_from_the_written_model(cli, tiny_bert_onnx, tmp_path):
    out = tmp_path / "p"
    code, stdout, err = cli("prune", tiny_bert_onnx, "--sparsity", "0.5", "--calib", "4", "-o", out)
    assert code == 0, err
    step = json.loads((out / "onnxopt.json").read_text())["steps"][-1]
    written = onnx.load(str(out / "model.onnx"))
    total = sum(int(np.prod(t.dims)) for t in written.graph.initializer)
    assert step["parameters"]["after"] == total < step["parameters"]["before"]
    assert f"{total:,}" in stdout
    for layer in step["layers"]:
        assert layer["params_after"] < layer["params_before"]
    # The blocks' weights as the file holds them: every 2-D MatMul weight is one of them or the pooler.
    matmul_weights = sum(
        int(np.prod(t.dims))
        for t in written.graph.initializer
        if len(t.dims) == 2
        and any(n.op_type == "MatMul" and n.input[1] == t.name for n in written.graph.node)
    )
    assert sum(layer["params_after"] for layer in step["layers"]) <= matmul_weights


def test_an_exception_with_an_empty_message_is_not_an_index_error(cli, model_copy, tmp_path, monkeypatch):
    """Symbolic shape inference failing with an empty message (as on optimum's merged decoder)
    turned the fallback into 'internal error: IndexError'."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    def fail(*_a, **_k):
        raise RuntimeError()

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(fail))
    code, stdout, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
    assert code == 0, err
    assert "symbolic inference failed: RuntimeError" in stdout.replace("\n", " ")


def test_an_internal_error_without_a_message_names_its_type_once(cli, model_copy, monkeypatch):
    def broken(*_a, **_k):
        raise KeyError()

    monkeypatch.setattr("onnxopt.evaluate.summary.summarize", broken)
    code, _o, err = cli("inspect", model_copy)
    assert_clean_error(code, err, "internal error: KeyError (run again with ONNXOPT_DEBUG=1")


HINTS = {
    errno.ENOSPC: "free some space",
    errno.EROFS: "read-only",
    errno.ELOOP: "symbolic link points back into itself",
    errno.EBUSY: "another program is using it",
    errno.EACCES: "permissions",
}


@pytest.mark.parametrize("number, hint", HINTS.items())
def test_os_errors_get_the_hint_of_their_errno(cli, model_copy, tmp_path, monkeypatch, number, hint):
    from onnxopt.io import model_files

    def fails(*_a, **_k):
        raise OSError(number, os.strerror(number), str(tmp_path / "q"))

    monkeypatch.setattr(model_files.onnx, "save_model", fails)
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, os.strerror(number), hint, "nothing was written")
    assert not any(other in err for other in set(HINTS.values()) - {hint})
    assert not (tmp_path / "q").exists()
