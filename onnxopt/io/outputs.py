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
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from onnxopt.errors import OnnxoptError, cut, os_error_message
from onnxopt.io.leftovers import STAGING_MARK, clean_stale_staging
from onnxopt.io.output_files import (  # the output files' half, read from here too, as before
    STDOUT,
    check_output_file,
    input_clash,
    input_paths,
    private_to_default,
    probe_writable,
    write_atomic,
    write_text_atomic,
)
from onnxopt.io.ownership import made_by_onnxopt

__all__ = ["STDOUT", "check_output_file", "input_paths", "write_atomic", "write_text_atomic"]


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
    clash = input_clash(out, inputs)
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
    probe_writable(out.parent)


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
    private_to_default(tmp, 0o777)
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
