"""Checks that keep a hostile or mistaken recipe from doing harm or wasting a run.

A recipe is read whole before anything runs, so its size is capped and only a regular file is
read. A step's name becomes a folder under OUT, so it must be a plain name. Every file a step
reads must exist before the first step runs, not be found missing an hour in. OUT must be new,
empty, or a recipe's own folder, and must not overlap the model it reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from onnxopt.errors import OnnxoptError, shorten
from onnxopt.io.outputs import write_text_atomic
from onnxopt.io.ownership import made_by_onnxopt

# The safe YAML reading (size cap, regular files only, no aliases, lines of every key) is shared
# with the search's space files: onnxopt.io.yaml_lines.
from onnxopt.io.run_folders import check_run_folder
from onnxopt.io.yaml_lines import MAX_BYTES, Lined, echo, parse, read_text  # noqa: F401

STATE_NAME = "recipe-state.json"
MAX_STEPS = 200
NAME_RULE = "ASCII letters, digits, '-', '_', and '.' after the first character, at most 64 characters"
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}\Z")
# As datasources.load_samples: a source with one of these suffixes, or without a '/', is a file
# (a hub lookup would only hide a typo); 'owner/name' is a `datasets` hub name.
_FILE_SUFFIXES = {".txt", ".text", ".md", ".csv", ".tsv", ".jsonl", ".ndjson"}


def check_step_name(name: object, where: str) -> None:
    """A step's name is its folder under OUT: refuse anything that could leave OUT or clash."""
    if not isinstance(name, str) or not _PLAIN.match(name):
        raise OnnxoptError(
            f"{where}: step name {shorten(name)} is not a plain name",
            f"it names a folder under OUT: use {NAME_RULE}",
        )
    if name.casefold() == STATE_NAME:
        raise OnnxoptError(f"{where}: step name {name!r} is reserved for the run's state", "choose another")


def find_path(value: str, base: Path) -> Path | None:
    """An existing path, absolute: relative to the recipe's folder first, then to the working
    directory (as the commands read it). None when neither exists or the name cannot be a path."""
    try:
        typed = Path(value).expanduser()
        for candidate in (base / typed, typed):
            if candidate.exists():
                return candidate.resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, too long a name, an unknown ~user
        return None
    return None


def looks_local(value: str) -> bool:
    """A model or data value that can only be a local path: hub ids are `name` or `owner/name`."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1


def resolve_model(value: str, base: Path, where: str) -> str:
    """An existing model folder as an absolute path; a hub id as given; a missing local path refused."""
    found = find_path(value, base)
    if found is not None:
        return str(found)
    if looks_local(value):
        raise OnnxoptError(
            f"{where}: {echo(value)} does not exist",
            "give an existing folder, a hub id such as gpt2, or null",
        )
    return value


def resolve_data(what: str, value: str, base: Path, samples: bool, where: str) -> str:
    """A data option's value, checked before any step runs. A file must be a regular file (never
    a FIFO or a device, which would block or never end). `samples` sources (calibration data,
    fidelity text) may also be a dataset folder or a `datasets` hub name."""
    found = find_path(value, base)
    if found is not None:
        if found.is_file() or (samples and found.is_dir()):
            return str(found)
        raise OnnxoptError(f"{where}: {what}: {echo(value)} is not a regular file", "give a data file")
    # Not found: a hub name (`owner/name`) is left to the step; anything else must be a file.
    if not samples or looks_local(value) or "/" not in value or Path(value).suffix.lower() in _FILE_SUFFIXES:
        raise OnnxoptError(
            f"{where}: {what}: {echo(value)} does not exist",
            "relative paths are read from the recipe's folder, then from the working directory",
        )
    return value


def claim_out(out: Path, model: str | None, model_steps: list[str]) -> None:
    """Check OUT before any step runs, then create it with a state file, which marks it as a
    recipe's folder from the start (so an interrupted first run may be resumed into it)."""
    check_run_folder(
        out, STATE_NAME, "recipe", Path(model) if model else None, "choose a new or empty folder"
    )
    for name in model_steps:
        folder = out / name
        why = "a symbolic link" if folder.is_symlink() else folder.exists() and made_by_onnxopt(folder)
        if why:
            raise OnnxoptError(
                f"{echo(folder)} exists and was not made by onnxopt ({why}); step {name!r} would replace it",
                "move it away, rename the step, or choose another folder with -o",
            )
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STATE_NAME).is_file():
        write_text_atomic(out / STATE_NAME, json.dumps({"steps": {}}, indent=2) + "\n")
