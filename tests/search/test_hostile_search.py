"""`onnxopt search` against a hostile probe (issue 26): a space of 10^9 points is counted and refused
in one line, never enumerated; a Ray address nothing answers at is refused within seconds, before
any work; SIGTERM, SIGHUP and Ctrl-C on a search running on a real local Ray end as they do on a
local one (143, 129, 130, one line, the trials' temporary copies gone); OUT/best is replaced only
when onnxopt made all of it; and a stopped search or recipe says what it kept in OUT for a resume."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from onnxopt.search import points as points_module
from onnxopt.search.points import MAX_POINTS, points, size
from onnxopt.search.space import default_space
from onnxopt.search.workflow import search
from tests.conftest import REPO, assert_clean_error, error_lines, write_sts_pairs

SPACE = "prune: {sparsity: [0]}\nquantize: {mode: [none, dynamic], smooth: null}\n"  # one trial: dynamic
FAST = {"batch": (1,), "seq_len": 16, "min_time": 0.01, "runs": 2}
FAST_ARGS = ["--batch", "1", "--seq-len", "16", "--min-time", "0.01", "--runs", "2"]
KEPT = "the trials so far are kept in {} for a resume (run the same command again)"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile-search")
    write_sts_pairs(folder / "sts.csv", 24, random.Random(0))
    (folder / "space.yaml").write_text(SPACE)
    return {"sts": folder / "sts.csv", "space": folder / "space.yaml"}


def _args(inputs, *more) -> list:
    return ["--max-drop", 100, "--data", inputs["sts"], "--space", inputs["space"], *FAST_ARGS, *more]


# -- 1. the space is counted before any point is made --------------------------------------------


def test_the_count_is_exact_where_every_combination_is_valid():
    for decoder in (False, True):
        space = default_space(decoder)
        assert size(space) == len(points(space))


def test_a_space_of_a_billion_points_is_refused_by_its_count_at_once(
    cli, tiny_bert_onnx, inputs, tmp_path, monkeypatch
):
    values = "[" + ", ".join(str(n) for n in range(1, 1001)) + "]"
    space = tmp_path / "huge.yaml"
    space.write_text(
        f"prune: {{sparsity: [0.5], heads: true, calib: {values}}}\n"
        f"quantize: {{mode: [static], method: minmax, smooth: null, calib: {values}, seq_len: {values}}}\n"
    )
    made = []

    def counted(*_args, **_kwargs):  # any config built means the points are being enumerated
        made.append(1)
        raise AssertionError("a point was made")

    monkeypatch.setattr(points_module, "PruneConfig", counted)
    monkeypatch.setattr(points_module, "QuantizeConfig", counted)
    start = time.perf_counter()
    args = ["--max-drop", 1, "--data", inputs["sts"], "--space", space]
    code, _o, err = cli("search", tiny_bert_onnx, "-o", tmp_path / "S", *args)
    counted_message = "the space has 1,000,000,000 combinations of values to try"
    assert_clean_error(
        code, err, counted_message, f"a search takes at most {MAX_POINTS:,}", "narrow the space"
    )
    assert time.perf_counter() - start < 10 and made == [] and not (tmp_path / "S").exists()


# -- 2. a Ray address nothing answers at ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def not_ray():
    """A port that accepts connections and closes them, as a web server or a stale proxy might."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.skipif(not importlib.util.find_spec("ray"), reason="ray is not installed")
@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1:{free}", "nothing answers at the Ray cluster address 127.0.0.1:{free} (Connection"),
        ("ray://127.0.0.1:{free}", "nothing answers at the Ray cluster address ray://127.0.0.1:{free}"),
        ("127.0.0.1:{not_ray}", "127.0.0.1:{not_ray} answers, but not as a Ray cluster (no gRPC server)"),
    ],
    ids=["refused", "ray-client-refused", "not-ray"],
)
def test_an_address_where_no_ray_answers_is_refused_in_seconds(
    cli, tiny_bert_onnx, inputs, tmp_path, monkeypatch, not_ray, address, message
):
    import ray

    def reached(*_args, **_kwargs):  # Ray retries such an address for minutes, warning all along
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", reached)
    ports = {"free": _free_port(), "not_ray": not_ray}
    start = time.perf_counter()
    ray_args = ["--executor", "ray", "--address", address.format(**ports)]
    code, _o, err = cli("search", tiny_bert_onnx, "-o", tmp_path / "S", *_args(inputs, *ray_args))
    assert_clean_error(code, err, message.format(**ports), "check --address")
    assert time.perf_counter() - start < 10 and not (tmp_path / "S").exists()


# -- 3. signals on a search running on a real local Ray --------------------------------------------


def _stop_mid_trial(model: Path, inputs, out: Path, tmp: Path, signum: int) -> tuple[int, str]:
    """Run a Ray search in its own process and send `signum` once a Ray task holds its temporary
    copy of the model (an onnxopt-search-* folder in the TMPDIR the process was given)."""
    ray_args = ["--executor", "ray", "--ray-cpus", 1]
    args = [str(a) for a in ["search", model, "-o", out, *_args(inputs, *ray_args)]]
    script = f"import sys; sys.argv = ['onnxopt', *{args!r}]; from onnxopt.cli.app import entry; entry()"
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}

    def default_signals():  # as a shell starts it, whatever this test's parent ignores
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_signals
    )
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.rstrip().endswith("dynamic: sent to Ray"):
                break
        deadline = time.monotonic() + 60
        while not list(tmp.glob("onnxopt-search-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp.glob("onnxopt-search-*")), "".join(seen)
        proc.send_signal(signum)
        seen.append(proc.stderr.read())
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, "".join(seen)


@pytest.mark.slow
@pytest.mark.skipif(not importlib.util.find_spec("ray"), reason="ray is not installed")
def test_signals_on_a_ray_search_end_as_on_a_local_one(tiny_bert_onnx, inputs, tmp_path):
    # A short TMPDIR: Ray puts its sockets under it, and a socket's path may not pass 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="ohs-", dir="/tmp"))
    out = tmp_path / "S"
    expected = [
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
        (signal.SIGHUP, 129, "hung up (SIGHUP)"),  # each run resumes the last: the reference is kept
        (signal.SIGINT, 130, "interrupted"),
    ]
    try:
        for signum, code, said in expected:
            got, err = _stop_mid_trial(tiny_bert_onnx, inputs, out, tmp, signum)
            assert got == code, err
            assert error_lines(err) == [f"onnxopt: error: {said}; {KEPT.format(out)}"], err
            assert list(tmp.glob("onnxopt-search-*")) == [], (
                err
            )  # the task's copy, removed as it was cancelled
            trials = [json.loads(line)["key"] for line in (out / "trials.jsonl").read_text().splitlines()]
            assert trials == ["reference"]  # the signal came mid-trial
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- 4. OUT/best is replaced only when onnxopt made all of it ---------------------------------------


@pytest.fixture(scope="module")
def searched(tiny_bert_onnx, inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("best") / "S"
    options = {"max_drop": 100.0, "data": str(inputs["sts"]), "space": str(inputs["space"]), **FAST}
    result = search(tiny_bert_onnx, out, **options)
    assert result.best is not None and (out / "best" / "recipe.yaml").is_file()
    return out


def _copy(searched: Path, tmp_path: Path) -> Path:
    out = tmp_path / "S"
    shutil.copytree(searched, out)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_rerun_replaces_the_best_it_made(cli, tiny_bert_onnx, inputs, searched, tmp_path):
    out = _copy(searched, tmp_path)
    listed = json.loads((out / "best" / "onnxopt.json").read_text())["files"]
    assert "recipe.yaml" in listed and "model.onnx" in listed
    code, _o, err = cli("search", tiny_bert_onnx, "-o", out, *_args(inputs))
    assert code == 0, err
    assert (out / "best" / "model.onnx").is_file()


@pytest.mark.parametrize("planted", ["notes.txt", "mine/keep.txt", "no manifest"])
def test_a_rerun_never_deletes_what_a_user_put_in_best(
    cli, tiny_bert_onnx, inputs, searched, tmp_path, planted
):
    out = _copy(searched, tmp_path)
    best = out / "best"
    if planted == "no manifest":  # a user's own folder named best
        shutil.rmtree(best)
        best.mkdir()
        (best / "a.txt").write_text("mine")
        named = "(no onnxopt.json: it holds a.txt)"
    else:
        (best / planted).parent.mkdir(exist_ok=True)
        (best / planted).write_text("mine")
        named = f"it holds {planted.split('/')[0]}, which its onnxopt.json does not list"
    before = _files(best)
    code, _o, err = cli("search", tiny_bert_onnx, "-o", out, *_args(inputs))
    assert_clean_error(code, err, f"{best} was not made by onnxopt", named, "a search replaces that folder")
    assert _files(best) == before


# -- 5. a stopped search or recipe says what it kept ------------------------------------------------


def _signal_here(signum: int = signal.SIGTERM):
    def arrive(*_args, **_kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises here

    return arrive


def test_a_stopped_search_says_its_trials_are_kept(cli, tiny_bert_onnx, inputs, tmp_path, monkeypatch):
    from onnxopt.search import jobs, workflow

    out = tmp_path / "S"
    monkeypatch.setattr(jobs, "evaluate_model", _signal_here())  # the first trial; the reference is done
    code, _o, err = cli("search", tiny_bert_onnx, "-o", out, *_args(inputs))
    assert code == 143 and error_lines(err) == [
        f"onnxopt: error: terminated (SIGTERM); {KEPT.format(out)}"
    ], err
    assert (out / "search.json").is_file() and "reference" in (out / "trials.jsonl").read_text()
    # Stopped before OUT was made: then nothing was written, and it says so.
    monkeypatch.setattr(workflow, "model_hash", _signal_here(signal.SIGHUP))
    # The handler path is what is tested, whatever this process inherited (under nohup SIGHUP
    # arrives ignored, and ignored it stays: tests/io/test_hostile_outputs.py).
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        code, _o, err = cli("search", tiny_bert_onnx, "-o", tmp_path / "new", *_args(inputs))
    finally:
        signal.signal(signal.SIGHUP, inherited)
    assert code == 129 and error_lines(err) == ["onnxopt: error: hung up (SIGHUP); nothing was written"], err
    assert not (tmp_path / "new").exists()


def test_a_stopped_recipe_says_its_finished_steps_are_kept(cli, tiny_bert_onnx, tmp_path, monkeypatch):
    from onnxopt.recipes import steps

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {tiny_bert_onnx}\nsteps:\n  - quantize: {{name: q1, dynamic: true}}\n"
        "  - quantize: {name: q2, dynamic: true, per_channel: true}\n"
    )
    make_model, calls = steps.make_model, []

    def second_stops(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            _signal_here()()
        return make_model(*args, **kwargs)

    monkeypatch.setattr(steps, "make_model", second_stops)
    out = tmp_path / "out"
    code, _o, err = cli("run", recipe, "-o", out)
    said = f"the steps finished so far are kept in {out} for a resume (run the same command again)"
    assert code == 143 and error_lines(err) == [f"onnxopt: error: terminated (SIGTERM); {said}"], err
    assert (out / "q1" / "model.onnx").is_file() and not (out / "q2").exists()
