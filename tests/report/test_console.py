"""Output that is not a terminal (logs, pipes, CI) is 100 columns wide: every line fits, the step
tables folding their cells rather than running to 150 columns as they did."""

import os
import subprocess
import sys

from onnxopt.report.console import LOG_WIDTH


def _stdout(*args) -> str:
    """The CLI in its own process, stdout a pipe and COLUMNS unset, as in a CI log."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    code = "import sys; from onnxopt.cli.app import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_tables_fit_100_columns_when_stdout_is_not_a_terminal(tiny_bert_onnx, tmp_path):
    assert LOG_WIDTH == 100
    printed = _stdout("quantize", tiny_bert_onnx, "--static", "--calib", 4, "-o", tmp_path / "q")
    printed += _stdout("optimize", tiny_bert_onnx, "-o", tmp_path / "o")
    assert "what changed" in printed  # the step tables were printed
    wide = [line for line in printed.splitlines() if len(line) > LOG_WIDTH]
    assert not wide, "\n".join(wide)
