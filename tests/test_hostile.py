"""Hostile and broken model files: each gets one clean line on stderr, exit 2, and nothing written."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxopt.io import text_graphs
from tests.conftest import assert_clean_error, error_lines

COMMANDS = {  # how each command is pointed at a model file; all must refuse it the same way
    "quantize": lambda model, out: ("quantize", model, "--dynamic", "-o", out),
    "inspect": lambda model, out: ("inspect", model),
    "bench": lambda model, out: ("bench", model, "--batch", "1", "--runs", "1", "--min-time", "0"),
}


def _model_dir(tmp_path, model: onnx.ModelProto, name: str = "model.onnx"):
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    onnx.save(model, str(folder / name))
    return folder / name


def _refused_everywhere(cli, tmp_path, model_path, *fragments):
    for name, args in COMMANDS.items():
        out = tmp_path / f"out-{name}"
        code, _o, err = cli(*args(model_path, out))
        assert_clean_error(code, err, *fragments)
        assert not out.exists(), name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "in"]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(cli, tmp_path, seed):
    path = tmp_path / "in" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(np.random.default_rng(seed).bytes(2048))
    _refused_everywhere(cli, tmp_path, path, "is not a readable ONNX model")


def test_truncated_file(cli, tmp_path):
    path = _model_dir(tmp_path, text_graphs.load("mlp"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused_everywhere(cli, tmp_path, path, "is not a readable ONNX model")


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_folder_is_refused(cli, tmp_path, location):
    model = text_graphs.load("linear")
    weight = model.graph.initializer[0]
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.ClearField("float_data")
    weight.ClearField("raw_data")
    weight.external_data.add(key="location", value=location)
    weight.external_data.add(key="length", value="48")
    (tmp_path / "secret.bin").write_bytes(b"\0" * 48)
    path = _model_dir(tmp_path, model)
    for name, args in COMMANDS.items():
        code, _o, err = cli(*args(path, tmp_path / f"out-{name}"))
        assert_clean_error(code, err, "external data outside its folder", repr(location))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_by_name(cli, tmp_path, bad):
    model = text_graphs.load("linear")
    values = numpy_helper.to_array(model.graph.initializer[0]).copy()
    values[1, 2] = bad
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(values, "w"))
    path = _model_dir(tmp_path, model)
    code, _o, err = cli("quantize", path, "--dynamic", "-o", tmp_path / "q")
    assert_clean_error(code, err, "weight 'w' has 1 non-finite values")
    assert not (tmp_path / "q").exists()


def test_ir_version_newer_than_the_runtime(cli, tmp_path):
    from onnxopt.io.saving import runtime_max_ir_version

    model = text_graphs.load("linear")
    model.ir_version = runtime_max_ir_version() + 1
    path = _model_dir(tmp_path, model)
    _refused_everywhere(cli, tmp_path, path, f"has IR version {model.ir_version}", "reads up to")


def test_opset_newer_than_the_runtime(cli, tmp_path):
    from onnxopt.io.saving import runtime_max_opset

    model = text_graphs.load("linear")
    model.opset_import[0].version = runtime_max_opset() + 1
    path = _model_dir(tmp_path, model)
    _refused_everywhere(cli, tmp_path, path, f"uses opset {runtime_max_opset() + 1}", "supports up to")


HOSTILE_TEXT = "\n".join(
    [
        "",
        "   ",
        "plain words",
        "émojis 🙂🚀 and CJK 漢字かな한글",
        "right to left: שלום עולם مرحبا",
        "zero\u200bwidth and com\u0301bining marks",
        "word " * 5000,  # far longer than the sequence length
        "\t",
        "nul\x00byte inside",
    ]
)


def test_calibration_text_with_blank_lines_unicode_and_long_samples(cli, tiny_bert_onnx, tmp_path):
    data = tmp_path / "calib.txt"
    data.write_text(HOSTILE_TEXT, encoding="utf-8")
    out = tmp_path / "q"
    code, stdout, err = cli(
        "quantize", tiny_bert_onnx, "--static", "--calib", 6, "--calib-data", data, "--seq-len", 16, "-o", out
    )
    assert code == 0, err
    assert (out / "model.onnx").is_file()
    code, _o, err = cli("prune", tiny_bert_onnx, "--sparsity", 0.25, "--calib", 6, "--calib-data", data,
                        "-o", tmp_path / "p")  # fmt: skip
    assert code == 0, err


def test_full_disk_is_one_line_and_leaves_nothing(cli, tiny_bert_onnx, tmp_path, monkeypatch):
    import errno

    from onnxopt.io import model_files

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "q"))

    monkeypatch.setattr(model_files.onnx, "save_model", full)
    code, _o, err = cli("quantize", tiny_bert_onnx, "--dynamic", "-o", tmp_path / "out" / "q")
    assert_clean_error(code, err, "No space left on device", "nothing was written")
    assert "internal error" not in err
    assert not (tmp_path / "out" / "q").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == [] if (tmp_path / "out").exists() else True


def _onnxopt_temp_dirs():
    """This process's temporary folders (named onnxopt-KIND-PID-...): other runs may share /tmp."""
    import os
    import tempfile
    from pathlib import Path

    return {p.name for p in Path(tempfile.gettempdir()).glob(f"onnxopt-*-{os.getpid()}-*")}


@pytest.mark.parametrize("command", ["prune", "export", "optimize"])
def test_ctrl_c_in_any_command_exits_130_and_cleans_up(
    cli, tiny_bert_hf, tiny_bert_onnx, tmp_path, monkeypatch, command
):
    from onnxopt.io import model_files

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    before = _onnxopt_temp_dirs()
    monkeypatch.setattr(model_files.onnx, "save_model", interrupted)  # mid-write, inside the staged folder
    monkeypatch.setattr(
        "onnxopt.export.workflow.compare_with_torch", interrupted
    )  # export: after optimum wrote
    out = tmp_path / "out" / "x"
    args = {
        "prune": ("prune", tiny_bert_onnx, "--sparsity", 0.25, "--calib", 4),
        "export": ("export", tiny_bert_hf),
        "optimize": ("optimize", tiny_bert_onnx),
    }[command]
    code, _o, err = cli(*args, "-o", out)
    assert code == 130, err
    assert error_lines(err) == ["onnxopt: error: interrupted; nothing was written"]
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])
    assert _onnxopt_temp_dirs() <= before
