"""Output folders and files: onnxopt only deletes or replaces what it made.

- An output folder is claimed before any heavy work: refused when it is, contains or lies inside
  an input (symlinks resolved), when it exists and is not onnxopt's even with --overwrite (not
  empty, and no manifest onnxopt wrote or entries it does not list: onnxopt.io.ownership), when
  its location is not writable, or when another run holds its lock.
- The result is staged in a temporary folder beside OUT and renamed into place, so a failed or
  interrupted run leaves nothing half-written; the staged folder carries a marker with the pid,
  so a later run removes what a killed one left (and puts back a previous OUT it had moved aside).
- Output files (--json, --plot, manifests) are written through a temporary sibling and renamed,
  and only a regular file is ever replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from onnxopt.errors import OnnxoptError, cut, os_error_message
from onnxopt.io.leftovers import STAGING_MARK, clean_stale_staging
from onnxopt.io.ownership import made_by_onnxopt

STDOUT = "-"


def input_paths(inputs: Sequence[Path]) -> list[Path]:
    """Every real path an input occupies: the input itself and, for a folder, each entry in it
    (a `model.onnx` that is a symlink into another folder makes that folder's file an input too)."""
    found: list[Path] = []
    for src in inputs:
        found.append(src.resolve())
        if src.is_dir():
            with contextlib.suppress(OSError):
                found.extend(entry.resolve() for entry in src.iterdir())
    return found


def _clash(target: Path, inputs: Sequence[Path]) -> tuple[str, Path] | None:
    """How `target` (resolved) meets an input: ("overwrite", input) when it is or holds one,
    ("inside", input) when it lies inside an input folder; None if it does neither."""
    resolved = target.resolve()
    reals = input_paths(inputs)
    for real in reals:
        if resolved == real or real.is_relative_to(resolved):
            return "would overwrite", real
    for real in reals:
        if real.is_dir() and resolved.is_relative_to(real):
            return "lies inside", real
    return None


def _writable(folder: Path, hint: str = "choose another -o") -> None:
    """Probe the nearest existing ancestor of `folder` for writing, so an unwritable OUT fails in
    the first second rather than after the work (onnxopt runs as root in containers, where
    os.access says yes to every permission, so the probe really creates and removes a folder)."""
    probe_in = folder
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise OnnxoptError(f"cannot write to {cut(str(folder))}: {probe_in} is a file", hint)
    try:
        Path(tempfile.mkdtemp(prefix=".onnxopt-probe-", dir=probe_in)).rmdir()
    except OSError as exc:
        raise OnnxoptError(f"cannot write to {cut(str(probe_in))}: {os_error_message(exc)}") from exc


def not_owned(folder: Path) -> str | None:
    """Why onnxopt may not replace this folder (onnxopt.io.ownership), None if it may: onnxopt
    made it, or it is empty."""
    return None if not any(folder.iterdir()) else made_by_onnxopt(folder)


def owned(folder: Path) -> bool:
    """Whether onnxopt may replace this folder: empty, or made by onnxopt (not_owned says why not)."""
    return not_owned(folder) is None


def check_output(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse an OUT that would touch an input or something onnxopt did not make, before any work."""
    if out.is_symlink():
        raise OnnxoptError(
            f"output {cut(str(out))} is a symbolic link", "give the real folder with -o, not a link to it"
        )
    clash = _clash(out, inputs)
    if clash is not None:
        raise OnnxoptError(
            f"output {cut(str(out))} {clash[0]} the input {cut(str(clash[1]))}",
            "choose an output folder outside the input, and not holding it",
        )
    if out.exists():
        if not out.is_dir():
            raise OnnxoptError(f"output {cut(str(out))} exists and is not a folder", "choose another -o")
        if not overwrite:
            raise OnnxoptError(
                f"output {cut(str(out))} already exists",
                "pass --overwrite or choose another folder with -o",
            )
        why = not_owned(out)
        if why is not None:
            raise OnnxoptError(
                f"output {cut(str(out))} is not an onnxopt output: {why}",
                "--overwrite replaces only folders onnxopt made; choose a new or empty folder",
            )
    _writable(out.parent)


class _Lock:
    """An exclusive lock file `.OUT.lock` beside OUT, held for the whole run: a second writer of
    the same OUT is refused at once instead of silently replacing the first one's result."""

    def __init__(self, out: Path):
        self.path = out.parent / f".{out.name}.lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OnnxoptError(
                    f"another onnxopt run (pid {holder}) is writing {cut(str(self.path.parent))}"
                    f"/{self.path.name[1:-5]}",
                    "wait for it to finish, or choose another -o",
                ) from None
            # The holder before us may have unlinked the file after we opened it: retry on the new one.
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT's lock for a run that writes into OUT piece by piece (a search, trial by trial)
    rather than staging it whole: a second writer of the same OUT is refused at once."""
    lock = _Lock(out)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (removed again if the run fails)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        with contextlib.suppress(OSError):
            folder.rmdir()


class OutputClaim:
    """A checked, locked output folder; `staged()` yields the folder to write the result into."""

    def __init__(self, out: Path, made_parents: list[Path]):
        self.out = out
        self.made_parents = made_parents

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        with staged_dir(self.out) as tmp:
            yield tmp


@contextlib.contextmanager
def claim_output(out: Path, inputs: Sequence[Path], overwrite: bool) -> Iterator[OutputClaim]:
    """Check OUT, take its lock, and clean what dead runs left beside it; on failure, also remove
    the parent folders this claim created."""
    # First, so that a previous output a killed run moved aside is back before OUT is judged.
    clean_stale_staging(out.absolute().parent)
    check_output(out, inputs, overwrite)
    made = _make_parents(out.parent)
    lock = _Lock(out)
    try:
        lock.acquire()
        yield OutputClaim(out, made)
    except BaseException:
        lock.release()
        _remove_empty(made)
        raise
    lock.release()


def _private_to_default(path: Path, base: int) -> None:
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(base & ~umask)  # mkdtemp/mkstemp make it private; the result should look like any file


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on any failure it is removed.

    The temporary folder sits in the same parent so the final rename stays on one file system.
    """
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        (tmp / STAGING_MARK).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise OnnxoptError(f"cannot write to {cut(str(parent))}: {os_error_message(exc)}") from exc
    _private_to_default(tmp, 0o777)
    try:
        yield tmp
        (tmp / STAGING_MARK).unlink()
        if out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_file(path: Path | None, inputs: Sequence[Path], option: str) -> None:
    """Refuse, before any work, a --json/--plot path that would overwrite an input or something that
    is not a regular file, or that cannot be written. `-` (standard output) is always fine."""
    if path is None or str(path) == STDOUT:
        return
    shown = cut(str(path))
    if path.is_dir():
        raise OnnxoptError(f"{option} {shown} is a folder", f"give a file path, e.g. {option} results.json")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OnnxoptError(
            f"{option} {shown} exists and is not a regular file",
            f"onnxopt replaces only regular files; use {option} - for standard output"
            if option == "--json"
            else "onnxopt replaces only regular files",
        )
    clash = _clash(path, inputs)
    if clash is not None:
        raise OnnxoptError(
            f"{option} {shown} {clash[0]} the input {cut(str(clash[1]))}", "write it outside the inputs"
        )
    _writable(path.parent, f"choose another {option} path")


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through a temporary sibling and a rename, so readers never see half a file;
    the temporary file is removed if `write` fails or the run is interrupted. `-` is stdout."""
    if str(path) == STDOUT:
        write(sys.stdout.buffer)
        sys.stdout.flush()
        return
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OnnxoptError(
            f"{cut(str(path))} exists and is not a regular file", "onnxopt replaces only files"
        )
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
        _private_to_default(Path(tmp), 0o666)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OnnxoptError(f"cannot write {cut(str(path))}: {os_error_message(exc)}") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))
