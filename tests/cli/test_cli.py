"""The real entry point, as a user runs it: exit codes and stderr in a subprocess."""

import subprocess
import sys


def _onnxopt(*args):
    code = "import sys; from onnxopt.cli.app import entry; sys.argv[0] = 'onnxopt'; entry()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands():
    result = _onnxopt("--help")
    assert result.returncode == 0
    for command in ("export", "quantize", "bench", "inspect"):
        assert command in result.stdout


def test_error_is_one_line_exit_2_no_traceback(tmp_path):
    result = _onnxopt("quantize", tmp_path / "missing", "--dynamic", "-o", tmp_path / "q")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("onnxopt: error: ") and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "q").exists()


def test_unknown_option_is_one_line(tmp_path):
    result = _onnxopt("bench", tmp_path, "--frobnicate")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--frobnicate" in result.stderr


def test_unexpected_exception_is_one_line_unless_debugging(cli, tiny_bert_onnx, monkeypatch):
    import pytest

    def broken(*_a, **_k):
        raise ValueError("something nobody expected\nsecond line")

    monkeypatch.setattr("onnxopt.evaluate.summary.summarize", broken)
    code, _o, err = cli("inspect", tiny_bert_onnx)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "internal error: ValueError: something nobody expected" in err and "ONNXOPT_DEBUG=1" in err
    monkeypatch.setenv("ONNXOPT_DEBUG", "1")
    with pytest.raises(ValueError):
        cli("inspect", tiny_bert_onnx)
