"""YAML files a user writes for onnxopt (recipes, search spaces), read safely and with the line
of every key, so each mistake can be named by its line.

Read whole before anything runs, so the size is capped and only a regular file is read (a FIFO
or a device is refused by name rather than blocking or reading forever). The loader refuses
what no such file needs and a hostile one uses: aliases and anchors (nine lines of them expand
to billions of values), deep nesting (recursion) and huge documents; each as soon as it is met.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from onnxopt.errors import ECHO_LIMIT, OnnxoptError, first_line, shorten

MAX_BYTES = 1 << 20  # the shipped recipes are under 1 KB; 1 MiB parses in about a second
# Composition limits: a recipe is a few levels deep and a few hundred values long; more is hostile.
MAX_DEPTH = 16
MAX_NODES = 20_000


@dataclass(frozen=True)
class Kind:
    """What the file is, in the messages: `recipe X does not exist`, `not allowed in recipes`."""

    noun: str = "recipe"
    plural: str = "recipes"
    hint: str = "see recipes/ for examples"


RECIPE = Kind()


def echo(value: object) -> str:
    """A user's path as typed when it is short and printable, else its cut repr(): one short line."""
    text = str(value)
    return text if len(text) <= ECHO_LIMIT and text.isprintable() else shorten(value)


def read_text(path: Path, kind: Kind = RECIPE) -> str:
    """The file's text, checked with stat before opening and with fstat after (the path may change)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise OnnxoptError(f"{kind.noun} {echo(path)} does not exist", kind.hint) from None
    except (OSError, ValueError) as exc:
        raise OnnxoptError(f"cannot read {kind.noun} {echo(path)}: {exc}", "check the path") from exc
    _check_regular(path, info, kind)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(path, os.fstat(f.fileno()), kind)
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise OnnxoptError(f"cannot read {kind.noun} {echo(path)}: {exc.strerror}", "check the path") from exc
    if len(data) > MAX_BYTES:
        _too_large(path, kind)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxoptError(
            f"cannot read {kind.noun} {echo(path)}: {exc}", f"a {kind.noun} is a UTF-8 YAML file"
        ) from exc


def _check_regular(path: Path, info: os.stat_result, kind: Kind) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise OnnxoptError(f"{kind.noun} {echo(path)} is not a regular file", "give a YAML file")
    if info.st_size > MAX_BYTES:
        _too_large(path, kind)


def _too_large(path: Path, kind: Kind) -> None:
    raise OnnxoptError(f"{kind.noun} {echo(path)} is larger than {MAX_BYTES >> 20} MiB", kind.hint)


class Lined(dict):
    """A mapping that remembers the line of each key."""

    line = 0
    lines: dict


class _Loader(yaml.SafeLoader):
    nodes = 0
    depth = 0
    kind = RECIPE

    def compose_node(self, parent, index):
        event = self.peek_event()
        where = f"{self.name}:{event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise OnnxoptError(
                f"{where}: YAML aliases and anchors are not allowed in {self.kind.plural}",
                "write each value out in full",
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise OnnxoptError(
                f"{where}: a {self.kind.noun} holds at most {MAX_NODES} values", f"split the {self.kind.noun}"
            )
        if self.depth >= MAX_DEPTH:
            raise OnnxoptError(
                f"{where}: nested more than {MAX_DEPTH} levels deep", f"flatten the {self.kind.noun}"
            )
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


def parse(path: Path, kind: Kind = RECIPE) -> Any:
    """The file's YAML, with each mapping's lines; refused with its line when it is not YAML."""
    loader = None
    try:
        loader = _Loader(read_text(path, kind))  # refuses a NUL or other control character here
        loader.name = str(path)
        loader.kind = kind
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
