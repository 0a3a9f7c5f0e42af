"""Output files (--json, --plot, manifests): checked before any work, written whole or not at all.

- A path is refused before the work when it would overwrite an input or lie inside one, when it
  is, holds or lies inside an output folder (-o, which each run replaces whole), when it exists
  and is not a regular file, or when its folder cannot be written or its name is too long there.
- A file is written through a temporary sibling and renamed, and only a regular file is replaced.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from onnxopt.errors import OnnxoptError, cut, os_error_message

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


def input_clash(target: Path, inputs: Sequence[Path]) -> tuple[str, Path] | None:
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


def probe_writable(folder: Path, hint: str = "choose another -o") -> None:
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


def private_to_default(path: Path, base: int) -> None:
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(base & ~umask)  # mkdtemp/mkstemp make it private; the result should look like any file


# Longer names fail on Linux's file systems (ext4, xfs, btrfs, tmpfs) only when written, after the work.
NAME_MAX, PATH_MAX = 255, 4096


def _tmp_prefix(path: Path) -> str:
    """The name write_atomic's temporary sibling starts with; mkstemp adds 8 characters."""
    return f".{path.name}.tmp-{os.getpid()}-"


def check_output_file(
    path: Path | None, inputs: Sequence[Path], option: str, outputs: Sequence[Path] = ()
) -> None:
    """Refuse, before any work, a --json/--plot path that would overwrite an input, meets an output
    folder (`outputs`: -o, replaced whole by the run), is not a regular file, or cannot be
    written. `-` (standard output) is always fine."""
    if path is None or str(path) == STDOUT:
        return
    shown = cut(str(path))
    _check_length(path, option)
    if path.is_dir():
        raise OnnxoptError(f"{option} {shown} is a folder", f"give a file path, e.g. {option} results.json")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OnnxoptError(
            f"{option} {shown} exists and is not a regular file",
            f"onnxopt replaces only regular files; use {option} - for standard output"
            if option == "--json"
            else "onnxopt replaces only regular files",
        )
    clash = input_clash(path, inputs)
    if clash is not None:
        raise OnnxoptError(
            f"{option} {shown} {clash[0]} the input {cut(str(clash[1]))}", "write it outside the inputs"
        )
    for out in outputs:
        meets = _output_clash(path, out)
        if meets is not None:
            raise OnnxoptError(
                f"{option} {shown} {meets} the output folder {cut(str(out))}",
                "write it beside the output folder, which holds only what onnxopt writes there",
            )
    _probe(path, option)


def _check_length(path: Path, option: str) -> None:
    """Names the file system refuses; the file's own name leaves room for the temporary sibling's."""
    shown = cut(str(path))
    folder = max(path.parent.parts or ("",), key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(folder)) > NAME_MAX:
        raise OnnxoptError(
            f"{option} {shown}: a folder name in it is {len(os.fsencode(folder))} bytes (at most {NAME_MAX})",
            "use a shorter path",
        )
    room = NAME_MAX - (len(os.fsencode(_tmp_prefix(path))) + 8 - len(os.fsencode(path.name)))
    if len(os.fsencode(path.name)) > room:
        raise OnnxoptError(
            f"{option} {shown}: the file name is {len(os.fsencode(path.name))} bytes, over the {room} "
            "that leave room for the temporary copy onnxopt writes first",
            "use a shorter file name",
        )
    if len(os.fsencode(str(path.absolute()))) + 32 >= PATH_MAX:
        raise OnnxoptError(f"{option} {shown}: the path is too long", "use a shorter path")


def _output_clash(path: Path, out: Path) -> str | None:
    target, folder = path.resolve(), out.resolve()
    if target == folder:
        return "is"
    if target.is_relative_to(folder):
        return "lies inside"
    return "holds" if folder.is_relative_to(target) else None


def _probe(path: Path, option: str) -> None:
    """Create and remove the temporary sibling write_atomic will write, when its folder exists
    (every permission and file system rule tried for real); else probe the nearest ancestor."""
    if not path.parent.is_dir():
        probe_writable(path.parent, f"choose another {option} path")
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OnnxoptError(f"cannot write {option} {cut(str(path))}: {os_error_message(exc)}") from exc


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
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
        private_to_default(Path(tmp), 0o666)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OnnxoptError(f"cannot write {cut(str(path))}: {os_error_message(exc)}") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))
