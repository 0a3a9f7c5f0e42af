"""Checks that keep a hostile or mistaken recipe from doing harm or wasting a run.

A recipe is read whole before anything runs, so its size is capped and only a regular file is
read. A step's name becomes a folder under OUT, so it must be a plain name. Every file a step
reads must exist before the first step runs, not be found missing an hour in. OUT must be new,
empty, or a recipe's own folder, and must not overlap the model it reads.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from onnxopt.errors import ECHO_LIMIT, OnnxoptError, first_line, shorten
from onnxopt.io.manifest import MANIFEST_NAME
from onnxopt.io.outputs import write_text_atomic

STATE_NAME = "recipe-state.json"
MAX_BYTES = 1 << 20  # the shipped recipes are under 1 KB; 1 MiB parses in about a second
MAX_STEPS = 200
NAME_RULE = "ASCII letters, digits, '-', '_', and '.' after the first character, at most 64 characters"
# Composition limits: a recipe is a few levels deep and a few hundred values long; more is hostile.
MAX_DEPTH = 16
MAX_NODES = 20_000
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}\Z")
# As datasources.load_samples: a source with one of these suffixes, or without a '/', is a file
# (a hub lookup would only hide a typo); 'owner/name' is a `datasets` hub name.
_FILE_SUFFIXES = {".txt", ".text", ".md", ".csv", ".tsv", ".jsonl", ".ndjson"}


def echo(value: object) -> str:
    """A user's path as typed when it is short and printable, else its cut repr(): one short line."""
    text = str(value)
    return text if len(text) <= ECHO_LIMIT and text.isprintable() else shorten(value)


def read_text(path: Path) -> str:
    """The recipe's text. Checked with stat before opening, so a FIFO or a device is refused by
    name rather than blocking or reading forever, and with fstat after (the path may change)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise OnnxoptError(f"recipe {echo(path)} does not exist", "see recipes/ for examples") from None
    except (OSError, ValueError) as exc:
        raise OnnxoptError(f"cannot read recipe {echo(path)}: {exc}", "check the path") from exc
    _check_regular(path, info)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(path, os.fstat(f.fileno()))
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise OnnxoptError(f"cannot read recipe {echo(path)}: {exc.strerror}", "check the path") from exc
    if len(data) > MAX_BYTES:
        _too_large(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxoptError(
            f"cannot read recipe {echo(path)}: {exc}", "a recipe is a UTF-8 YAML file"
        ) from exc


def _check_regular(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise OnnxoptError(f"recipe {echo(path)} is not a regular file", "give a YAML file")
    if info.st_size > MAX_BYTES:
        _too_large(path)


def _too_large(path: Path) -> None:
    raise OnnxoptError(
        f"recipe {echo(path)} is larger than {MAX_BYTES >> 20} MiB", "a recipe names a model and its steps"
    )


class Lined(dict):
    """A mapping that remembers the line of each key."""

    line = 0
    lines: dict


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses what no recipe needs and a hostile one uses: aliases and anchors
    (nine lines of them expand to billions of values), deep nesting (recursion) and huge
    documents; each is refused as soon as it is met, before the rest is read."""

    nodes = 0
    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        where = f"{self.name}:{event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise OnnxoptError(
                f"{where}: YAML aliases and anchors are not allowed in recipes",
                "write each value out in full",
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise OnnxoptError(f"{where}: a recipe holds at most {MAX_NODES} values", "split the recipe")
        if self.depth >= MAX_DEPTH:
            raise OnnxoptError(f"{where}: nested more than {MAX_DEPTH} levels deep", "flatten the recipe")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Lined:
    loader.flatten_mapping(node)
    result = Lined()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        try:
            key = loader.construct_object(key_node, deep=True)
            hash(key)
            value = loader.construct_object(value_node, deep=True)
        except (TypeError, ValueError, OverflowError) as exc:
            # An unhashable key ({[1]: x}), a date like 2024-13-45, an int past Python's digit limit.
            raise OnnxoptError(
                f"{loader.name}:{line}: cannot read this entry ({shorten(first_line(exc))})",
                "quote the value to make it a string",
            ) from exc
        if key in result:
            raise OnnxoptError(
                f"{loader.name}:{line}: duplicate key {shorten(key)}", "each key may appear once"
            )
        result[key] = value
        result.lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse(path: Path) -> Any:
    """The recipe's YAML, with each mapping's lines; refused with its line when it is not YAML."""
    loader = None
    try:
        loader = _Loader(read_text(path))  # refuses a NUL or other control character here
        loader.name = str(path)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or first_line(exc)  # str(exc) quotes the file: lines
        raise OnnxoptError(
            f"{where}: not valid YAML ({problem[:ECHO_LIMIT]})", "check indentation and colons"
        ) from exc
    finally:
        if loader is not None:
            loader.dispose()


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
    if "\0" in str(out):
        raise OnnxoptError(f"output {echo(out)} is not a valid path", "choose another folder with -o")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OnnxoptError(
                f"output {echo(out)} exists and is not a folder", "choose another folder with -o"
            )
        if not (out / STATE_NAME).is_file() and any(out.iterdir()):
            raise OnnxoptError(
                f"{echo(out)} is not a recipe output folder (no {STATE_NAME}) and is not empty",
                "choose a new or empty folder",
            )
    if model is not None and Path(model).exists():
        source, target = Path(model).resolve(), out.resolve()
        if target == source or target.is_relative_to(source) or source.is_relative_to(target):
            raise OnnxoptError(
                f"output {echo(out)} is, contains or lies inside the input model folder {echo(model)}",
                "choose an output folder apart from the model",
            )
    for name in model_steps:
        folder = out / name
        if folder.is_symlink() or (folder.exists() and not (folder / MANIFEST_NAME).is_file()):
            raise OnnxoptError(
                f"{echo(folder)} exists and was not made by onnxopt (no {MANIFEST_NAME}); "
                f"step {name!r} would replace it",
                "move it away, rename the step, or choose another folder with -o",
            )
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STATE_NAME).is_file():
        write_text_atomic(out / STATE_NAME, json.dumps({"steps": {}}, indent=2) + "\n")
