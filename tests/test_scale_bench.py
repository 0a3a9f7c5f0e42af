"""benchmarks/scale.py's pure parts: a step past its limit is stopped as Ctrl-C would (killed if it
ignores that) and marked,
and the older code's columns say stopped, failed or the ratios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _scale():
    spec = importlib.util.spec_from_file_location("scale_bench", _BENCH / "scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(_BENCH))  # scale imports run and scale_models by plain name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(_BENCH))
    return module


def test_a_step_past_its_limit_is_stopped_and_marked(tmp_path):
    scale = _scale()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    row = scale.measured(sleeper, tmp_path / "log", limit=1, grace=2)
    assert row["unfinished"] and row["exit"] != 0 and row["seconds"] < 30
    assert row["parent_rss_gb"] > 0  # the floor of the reading (the module doc)
    # A job started in the background ignores SIGINT: it is killed after the grace period.
    deaf = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)",
    ]
    row = scale.measured(deaf, tmp_path / "log", limit=1, grace=2)
    assert row["unfinished"] and row["exit"] == -9 and row["seconds"] < 30
    done = scale.measured([sys.executable, "-c", "pass"], tmp_path / "log", limit=30)
    assert "unfinished" not in done and done["exit"] == 0


def test_the_older_code_columns():
    older = _scale()._older
    step = {"seconds": 10.0, "peak_rss_gb": 2.0}
    assert older(step) == " | | | |"
    ran = {**step, "older_code": {"seconds": 30.0, "peak_rss_gb": 5.0, "exit": 0}}
    assert older(ran) == " 30.0 (exit 0) | 5.0 | 3.0x | 2.5x |"
    stopped = {**step, "older_code": {"seconds": 30.0, "peak_rss_gb": 5.0, "exit": -2, "unfinished": True}}
    assert "(stopped)" in older(stopped) and "> 3.0x" in older(stopped)
    failed = {**step, "older_code": {"seconds": 3.0, "peak_rss_gb": 1.0, "exit": 1}}
    assert "| failed |" in older(failed)
