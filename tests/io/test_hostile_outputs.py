"""Hostile use of output paths: onnxopt only deletes or replaces what it made, one writer at a
time, and a killed or signalled run leaves nothing behind (or the next run removes it).

Each test is a finding of issue 14 that failed on the code before it; `T` below is a copy of an
export, as in the issue.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import assert_clean_error, error_lines


def _sha(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def model_copy(tiny_bert_onnx, tmp_path):
    return shutil.copytree(tiny_bert_onnx, tmp_path / "T")


def _foreign(folder: Path) -> Path:
    """A folder onnxopt did not make: a fake home with a user's files."""
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_rsa").write_text("secret")
    (folder / "notes.txt").write_text("mine")
    return folder


def test_overwrite_refuses_a_folder_onnxopt_did_not_make(cli, model_copy, tmp_path):
    home = _foreign(tmp_path / "home")
    before = _sha(home)
    start = time.perf_counter()
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", home, "--overwrite")
    assert_clean_error(
        code, err, "is not an onnxopt output", "--overwrite replaces only folders onnxopt made"
    )
    assert time.perf_counter() - start < 10
    assert _sha(home) == before and (home / ".ssh" / "id_rsa").read_text() == "secret"


def test_overwrite_of_the_working_folder_is_refused_before_any_work(cli, model_copy, tmp_path, monkeypatch):
    work = _foreign(tmp_path / "work")
    monkeypatch.chdir(work)
    from onnxopt.passes.fuse_transformer import FuseTransformer

    def no_work(*_a, **_k):
        raise AssertionError("the fusion ran before the output was checked")

    monkeypatch.setattr(FuseTransformer, "call", no_work)
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", ".", "--overwrite")
    assert_clean_error(code, err, "is not an onnxopt output")
    assert (work / "notes.txt").read_text() == "mine"


def test_output_inside_the_input_is_refused(cli, model_copy):
    before = _sha(model_copy)
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", model_copy / "q")
    assert_clean_error(code, err, "lies inside the input")
    assert _sha(model_copy) == before and not (model_copy / "q").exists()


def test_input_model_linked_into_the_output_folder_is_never_overwritten(cli, model_copy, tmp_path):
    """model.onnx of L is a symlink to D/model.onnx; `quantize L -o D --overwrite` used to write the
    quantized model over the real file of its own input."""
    d = tmp_path / "D"
    shutil.copytree(model_copy, d)
    link = tmp_path / "L"
    link.mkdir()
    for item in model_copy.iterdir():
        if item.is_file() and item.name != "model.onnx":
            shutil.copy(item, link / item.name)
    (link / "model.onnx").symlink_to(d / "model.onnx")
    before = _sha(d)
    code, _o, err = cli("quantize", link, "--dynamic", "-o", d, "--overwrite")
    assert_clean_error(code, err, "model.onnx links to", "outside the model folder")
    assert _sha(d) == before
    # And the output rule on its own, should a linked input ever be read: D holds L's real file.
    from onnxopt.errors import OnnxoptError
    from onnxopt.io.outputs import check_output

    with pytest.raises(OnnxoptError, match="would overwrite the input"):
        check_output(d, [link], overwrite=True)


def test_bench_json_never_overwrites_a_model_or_a_device(cli, model_copy, tmp_path):
    before = _sha(model_copy)
    fast = ("--batch", "1", "--seq-len", "8", "--runs", "1", "--min-time", "0", "--warmup", "0")
    code, _o, err = cli("bench", model_copy, *fast, "--json", model_copy / "model.onnx")
    assert_clean_error(code, err, "--json", "would overwrite the input")
    code, _o, err = cli("bench", model_copy, *fast, "--plot", model_copy / "latency.png")
    assert_clean_error(code, err, "--plot", "lies inside the input")
    assert _sha(model_copy) == before
    device = tmp_path / "stdout-link"
    device.symlink_to("/dev/null")
    code, _o, err = cli("bench", model_copy, *fast, "--json", device)
    assert_clean_error(code, err, "is not a regular file", "--json - for standard output")
    assert device.is_symlink() and os.readlink(device) == "/dev/null"
    # `-` is standard output, and then stdout is the JSON alone (the tables go to stderr).
    code, out, err = cli("bench", model_copy, *fast, "--json", "-")
    assert code == 0, err
    assert json.loads(out)["results"][0]["batch"] == 1 and "Latency" in err
    assert not Path("-").exists()


def test_bench_json_in_an_unwritable_place_fails_before_measuring(cli, model_copy, tmp_path, monkeypatch):
    from onnxopt.runtime import measure

    monkeypatch.setattr(measure, "bench", lambda *a, **k: pytest.fail("measured before checking --json"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _o, err = cli("bench", model_copy, "--json", blocker / "r.json")
    assert_clean_error(code, err, "cannot write to", "is a file")


def test_unwritable_output_fails_in_the_first_second(cli, model_copy, tmp_path, monkeypatch):
    """Read-only file systems say EROFS even to root; the probe meets it before any work, and the
    hint names a read-only file system, not a full disk."""
    import errno

    from onnxopt.io import outputs

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(outputs.tempfile, "mkdtemp", read_only)
    start = time.perf_counter()
    code, _o, err = cli("quantize", model_copy, "--static", "-o", tmp_path / "q")
    assert_clean_error(code, err, "Read-only file system", "read-only; choose another output location")
    assert "free some space" not in err and time.perf_counter() - start < 10


def test_a_second_writer_of_the_same_output_is_refused(cli, model_copy, tmp_path):
    """Two concurrent runs into one OUT both used to print success, the last silently replacing the
    other. The lock is a real flock held by another process here."""
    out = tmp_path / "conc"
    lock = tmp_path / ".conc.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242')\n"
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", out)
        assert_clean_error(code, err, "another onnxopt run (pid 4242) is writing", "conc")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", out)
    assert code == 0, err
    assert not lock.exists()  # released and removed once the run ends


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_run_removes_what_a_killed_run_left(cli, model_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    dead, alive = _dead_pid(), os.getpid()
    staged = tmp_path / "out" / f".q.tmp-{dead}-abc123"
    staged.mkdir(parents=True)
    (staged / ".onnxopt-staging").write_text(str(dead))
    (staged / "model.onnx").write_bytes(b"half written")
    unmarked = tmp_path / "out" / f".q.tmp-{dead}-zzz"  # no marker: not provably ours, left alone
    unmarked.mkdir()
    calib = tmp_path / "tmp" / f"onnxopt-calib-{dead}-xyz"
    calib.mkdir()
    (calib / "augmented.onnx").write_bytes(b"\0" * 1000)
    live = tmp_path / "tmp" / f"onnxopt-calib-{alive}-live"
    live.mkdir()
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "out" / "q")
    assert code == 0, err
    assert not staged.exists() and not calib.exists()
    assert unmarked.is_dir() and live.is_dir()


def test_an_output_moved_aside_by_a_killed_run_is_put_back(cli, model_copy, tmp_path):
    """A run killed between moving the old OUT aside and renaming the new one into place left the
    user's previous output under a hidden name; the next run restores it before anything else."""
    out = tmp_path / "q"
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", out)
    assert code == 0, err
    before = _sha(out)
    out.rename(tmp_path / f".q.old-{_dead_pid()}")
    code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", out)
    assert_clean_error(code, err, "already exists")  # restored, so it is there to refuse
    assert _sha(out) == before


def _leftovers(tmp_path: Path) -> list[str]:
    found = [p.name for p in tmp_path.iterdir() if p.name not in ("T",)]
    found += [p.name for p in Path(tempfile.gettempdir()).glob(f"onnxopt-*-{os.getpid()}-*")]
    return found


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("where", ["calibrate", "save"])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(cli, model_copy, tmp_path, monkeypatch, signum, code, where):
    from onnxopt.io import model_files
    from onnxopt.quantize import calibrate

    if where == "calibrate":
        real = calibrate.write_temp_model

        def arrive(*args, **kwargs):
            path = real(*args, **kwargs)  # the onnxopt-calib-* folder now holds a model copy
            os.kill(os.getpid(), signum)
            return path

        monkeypatch.setattr(calibrate, "write_temp_model", arrive)
    else:

        def arrive(*_a, **_k):
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises here, inside the staged folder's write

        monkeypatch.setattr(model_files.onnx, "save_model", arrive)
    # The handler path is what is tested, whatever this process inherited (under nohup, SIGHUP
    # arrives ignored, and ignored it must stay: test_an_ignored_sighup_stays_ignored).
    inherited = signal.signal(signum, signal.SIG_DFL)
    out = tmp_path / "out" / "q"
    start = time.perf_counter()
    try:
        got, _o, err = cli("quantize", model_copy, "--static", "--calib", "4", "-o", out)
        restored = signal.getsignal(signum)
    finally:
        signal.signal(signum, inherited)
    assert got == code, err
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGHUP"
    assert error_lines(err) == [
        f"onnxopt: error: {'terminated' if name == 'SIGTERM' else 'hung up'} ({name}); nothing was written"
    ]
    assert time.perf_counter() - start < 60  # static calibration of a tiny BERT on a loaded machine
    assert _leftovers(tmp_path) == [] and restored is signal.SIG_DFL


def test_an_ignored_sighup_stays_ignored(cli, model_copy, tmp_path, monkeypatch):
    """`nohup onnxopt quantize ...`: the hang-up of the terminal must not end the run."""
    from onnxopt.io import model_files

    real = model_files.onnx.save_model

    def arrive(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGHUP)  # the terminal closes mid-save
        return real(*args, **kwargs)

    monkeypatch.setattr(model_files.onnx, "save_model", arrive)
    inherited = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        code, _o, err = cli("quantize", model_copy, "--dynamic", "-o", tmp_path / "q")
        kept = signal.getsignal(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, inherited)
    assert code == 0, err
    assert (tmp_path / "q" / "onnxopt.json").is_file() and kept is signal.SIG_IGN


def test_sigterm_exit_status_of_the_real_process(model_copy, tmp_path):
    """The same through the entry point, as a service manager stops it: exit status 143."""
    script = (
        "import os, signal, sys, time\n"
        "from onnxopt.io import model_files\n"
        "def arrive(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
        "model_files.onnx.save_model = arrive\n"
        "from onnxopt.cli.app import entry\n"
        f"sys.argv = ['onnxopt', 'quantize', {str(model_copy)!r}, '--dynamic',"
        f" '-o', {str(tmp_path / 'q')!r}]\n"
        "entry()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 143, result.stderr
    assert error_lines(result.stderr) == ["onnxopt: error: terminated (SIGTERM); nothing was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T"]
