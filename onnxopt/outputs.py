"""Writing output folders atomically: a failed or interrupted run leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OnnxoptError


def check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse an OUT that is one of the inputs, or that exists without --overwrite."""
    out_resolved = out.resolve()
    for src in inputs:
        src_resolved = src.resolve()
        if out_resolved == src_resolved or src_resolved.is_relative_to(out_resolved):
            raise OnnxoptError(
                f"output {out} would overwrite the input {src}", "choose another output folder with -o"
            )
    if out.exists() and not overwrite:
        raise OnnxoptError(
            f"output {out} already exists", "pass --overwrite or choose another folder with -o"
        )
    if out.exists() and not out.is_dir():
        raise OnnxoptError(f"output {out} exists and is not a folder", "choose another output path with -o")


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on any failure it is removed.

    The temporary folder sits in the same parent so the final rename stays on one file system.
    """
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise OnnxoptError(
            f"cannot write to {parent}: {exc.strerror}", "choose a writable output location with -o"
        ) from exc
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any folder
    try:
        yield tmp
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


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through a temporary sibling and a rename, so readers never see half a file;
    the temporary file is removed if `write` fails or the run is interrupted."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp makes the file private (0600); give it the mode any new file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OnnxoptError(
            f"cannot write {path}: {exc.strerror or exc}", "choose a writable location"
        ) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))
