"""Opening only what is safe: regular files inside the folder they belong to.

A model folder from a stranger can hold a `tokenizer.json` that is a FIFO (reading blocks
forever), a link to `/dev/zero` (reads until memory runs out), or `extra.json -> /etc/passwd`
(copied into the output as a regular file: exfiltration). So every file onnxopt reads or copies
from a model folder must, after resolving symlinks, be a regular file inside that folder; the
one exception is a Hugging Face cache snapshot, whose files are links into the same repository's
`blobs/` folder.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from onnxopt.errors import OnnxoptError, cut, first_line, shorten

# Files that travel with a model from step to step (tokenizer, config, pooling of sentence-transformers,
# chat_template.jinja: transformers 4.57 saves a chat template there, no longer in tokenizer_config.json).
SIDECAR_SUFFIXES = {".json", ".txt", ".model", ".vocab", ".jinja"}
# What transformers and onnxruntime read from a folder besides the sidecars.
MODEL_SUFFIXES = {".onnx", ".data", ".safetensors", ".bin", ".gguf", ".msgpack", ".h5", ".pt"}
JSON_LIMIT = 64 << 20  # a config or tokenizer.json past 64 MiB is not one


MIB = 1 << 20
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def size_text(count: int) -> str:
    """1,024 bytes, 1 MiB, 16.5 MiB: sizes in messages."""
    return f"{count / MIB:g} MiB" if count >= MIB else f"{count:,} bytes"


def regular_file(path: Path, what: str, hint: str = "", max_bytes: int | None = None) -> Path:
    """`path` when it is a regular file (symbolic links followed) of at most `max_bytes`, else one
    clear error. Checked before anything opens it: opening a FIFO blocks until someone writes to
    it, and a device such as /dev/zero never ends."""
    name = cut(str(path))
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise OnnxoptError(f"{what} {name} does not exist", hint or "check the path") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise OnnxoptError(f"cannot read {what} {name}: {reason}", "check the path") from exc
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _KINDS if test(info.st_mode)), "a special file")
        raise OnnxoptError(f"{what} {name} is {kind}, not a regular file", hint or "give a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise OnnxoptError(
            f"{what} {name} is {size_text(info.st_size)}, over the {size_text(max_bytes)} onnxopt reads",
            hint or "give a smaller file",
        )
    return path


def _homes(folder: Path) -> list[Path]:
    """Where files of `folder` may really live: the folder itself, and for a Hugging Face cache
    snapshot (`models--org--name/snapshots/<rev>`) the repository's `blobs/` folder."""
    real = folder.resolve()
    homes = [real]
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        homes.append((real.parent.parent / "blobs").resolve())
    return homes


def file_in_folder(folder: Path, path: Path, what: str = "file", max_bytes: int | None = None) -> Path:
    """`path` (inside `folder`) if it resolves to a regular file inside the folder; else an error
    naming it and where it points."""
    try:
        real = path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        raise OnnxoptError(f"{what} {cut(str(path))} cannot be resolved ({first_line(exc)})") from exc
    if not any(real == home or real.is_relative_to(home) for home in _homes(folder)):
        raise OnnxoptError(
            f"{what} {cut(str(path))} links to {cut(str(real))}, outside the model folder",
            "copy the file into the folder; onnxopt reads nothing outside it",
        )
    return regular_file(path, what, max_bytes=max_bytes)


def _read_by_onnxopt(entry: Path) -> bool:
    name = entry.name
    return not name.startswith(".") and (entry.suffix in SIDECAR_SUFFIXES | MODEL_SUFFIXES)


def _module_folder(entry: Path) -> bool:
    """sentence-transformers module folders such as 1_Pooling/."""
    return entry.name[:1].isdigit() and "_" in entry.name


def check_folder_files(folder: Path) -> None:
    """Refuse, by name, any file of a model folder that onnxopt or the libraries it calls would
    read or copy and that is not a regular file inside the folder (module folders included)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise OnnxoptError(f"cannot list {cut(str(folder))}: {exc.strerror or first_line(exc)}") from exc
    for entry in entries:
        if _module_folder(entry) and (entry.is_dir() or entry.is_symlink()):
            for inner in _module_files(folder, entry):
                file_in_folder(folder, inner, "model file")
        elif _read_by_onnxopt(entry) or entry.is_symlink() and entry.suffix in SIDECAR_SUFFIXES:
            file_in_folder(folder, entry, "model file")


def _module_files(folder: Path, module: Path) -> list[Path]:
    """The files of a module folder, walked without following links (a link loop would never end)."""
    if module.is_symlink():
        raise OnnxoptError(
            f"model folder {cut(str(module))} is a symbolic link",
            "replace it with a real folder; onnxopt does not follow links to folders",
        )
    found = []
    for root, dirs, files in os.walk(module, followlinks=False):
        for name in dirs:
            if (Path(root) / name).is_symlink():
                raise OnnxoptError(
                    f"model folder {cut(str(Path(root) / name))} is a symbolic link",
                    "replace it with a real folder; onnxopt does not follow links to folders",
                )
        found += [Path(root) / name for name in files]
    return found


def read_json(folder: Path, name: str, what: str | None = None) -> dict[str, Any] | None:
    """A JSON object file of a model folder, or None when it is absent; anything else is an error."""
    path = folder / name
    if not path.exists() and not path.is_symlink():
        return None
    file_in_folder(folder, path, what or name, JSON_LIMIT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise OnnxoptError(
            f"{cut(str(path))} is not valid JSON ({first_line(exc, 80)})",
            "restore the file, or export the model again",
        ) from exc
    if not isinstance(data, dict):
        raise OnnxoptError(
            f"{cut(str(path))} holds a JSON {type(data).__name__}, not an object",
            "restore the file, or export the model again",
        )
    return data


def positive_int(config: dict, key: str, folder: Path | None) -> int | None:
    """An integer setting of config.json that must be positive when present (vocab_size, say)."""
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OnnxoptError(
            f"{folder}/config.json: {key} is {shorten(value)}; expected a positive integer",
            "fix config.json, or export the model again",
        )
    return value


def copy_sidecars(src_folder: Path | None, dst_folder: Path, skip: set[str]) -> list[str]:
    """Copy tokenizer/config files (and sentence-transformers' module folders) next to the new model,
    each checked to be a regular file inside the source folder and copied as one."""
    if src_folder is None:
        return []
    copied = []
    for item in sorted(src_folder.iterdir()):
        if item.name in skip or item.name.startswith("."):
            continue
        if item.suffix in SIDECAR_SUFFIXES and (item.is_file() or item.is_symlink()):
            shutil.copyfile(file_in_folder(src_folder, item, "model file"), dst_folder / item.name)
            copied.append(item.name)
        elif _module_folder(item) and (item.is_dir() or item.is_symlink()):
            for inner in _module_files(src_folder, item):
                target = dst_folder / inner.relative_to(src_folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file_in_folder(src_folder, inner, "model file"), target)
            copied.append(item.name + "/")
    return copied
