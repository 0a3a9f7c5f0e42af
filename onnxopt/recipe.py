"""Recipes: a YAML file naming a model and the steps to apply, with the commands' own options.

    model: null              # the bundled MiniLM; a folder or hub id otherwise
    steps:
      - export: {}
      - quantize: {static: true, calib: 40}
      - eval: {task: sts, data: ../shared/data/stsb/sts-dev.csv}
      - bench: {batch: [1, 32]}

Validated before anything runs: each bad key or value is one error naming its line. Relative
paths are relative to the recipe file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import OnnxoptError

MODEL_STEPS = ("export", "optimize", "quantize", "prune")  # steps that make a model
REPORT_STEPS = ("eval", "bench")  # steps that measure models


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v):
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _choice(*values) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in values), f"one of {', '.join(map(str, values))}"


_BOOL = (lambda v: isinstance(v, bool), "true or false")
_INT = (lambda v: _int(v) and v > 0, "a positive integer")
_NUM = (_num, "a number")
_STR = (lambda v: isinstance(v, str) and v != "", "a string")
_PATH = _STR
_OPT_BOOL = (lambda v: v is None or isinstance(v, bool), "true, false or null")
_STR_LIST = (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")
_INT_LIST = (
    lambda v: isinstance(v, list) and v and all(_int(x) and x > 0 for x in v),
    "a list of positive integers",
)

# kind -> option -> (check, what it must be). `input` (the step whose model to use) and `name`
# are accepted by every step.
SCHEMA: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "export": {"task": _STR, "opset": _INT, "atol": _NUM, "trust_remote_code": _BOOL},
    "optimize": {"atol": _NUM},
    "quantize": {
        "static": _BOOL,
        "dynamic": _BOOL,
        "calib": _INT,
        "calib_data": _PATH,
        "text_column": _STR,
        "method": _choice("minmax", "entropy", "percentile"),
        "per_channel": _BOOL,
        "ops": _STR_LIST,
        "exclude": _STR_LIST,
        "seq_len": _INT,
        "optimize": _BOOL,
        "max_drop": _NUM,
        "eval_data": _PATH,
        "smooth": _OPT_BOOL,
        "all_static": _BOOL,
    },
    "prune": {
        "sparsity": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
        "calib": _INT,
        "calib_data": _PATH,
        "text_column": _STR,
        "heads": _BOOL,
        "ffn": _BOOL,
        "mask_only": _BOOL,
        "per_layer_floor": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
        "seq_len": _INT,
    },
    "eval": {
        "task": _choice("fidelity", "sts", "classification", "qa", "perplexity"),
        "data": _PATH,
        "reference": _STR,
        "limit": _INT,
        "seq_len": _INT,
        "text_column": _STR,
        "label_column": _STR,
    },
    "bench": {
        "batch": _INT_LIST,
        "seq": _INT,
        "ep": _STR,
        "runs": _INT,
        "min_time": (lambda v: _num(v) and v >= 0, "a number of seconds, 0 or more"),
        "threads": _INT,
        "models": (lambda v: v == "all" or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
                   "'all' or a list of step names"),
    },
}  # fmt: skip
_COMMON = {"name": _STR, "input": _STR}
for _kind in MODEL_STEPS:  # as the commands' --verify-loading
    SCHEMA[_kind]["verify_loading"] = _BOOL
REQUIRED = {"prune": ("sparsity",)}
PATH_OPTIONS = ("calib_data", "eval_data", "data")


@dataclass
class Step:
    kind: str
    name: str
    options: dict[str, Any]
    line: int
    input: str | None = None  # name of the step whose model this one takes; None: the latest


@dataclass
class Recipe:
    path: Path
    model: str | None
    steps: list[Step] = field(default_factory=list)
    name: str = ""


class _Lined(dict):
    """A mapping that remembers the line of each key."""

    line = 0
    lines: dict


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Lined:
    loader.flatten_mapping(node)
    result = _Lined()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            raise OnnxoptError(f"{loader.name}:{line}: duplicate key {key!r}", "each key may appear once")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: Path) -> Recipe:
    if not path.is_file():
        raise OnnxoptError(f"recipe {path} does not exist", "see recipes/ for examples")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OnnxoptError(f"cannot read recipe {path}: {exc}", "a recipe is a UTF-8 YAML file") from exc
    loader = _Loader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise OnnxoptError(
            f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})",
            "check indentation and colons",
        ) from exc
    finally:
        loader.dispose()
    return _validate(path, data)


def _fail(path: Path, line: int, message: str, hint: str) -> None:
    raise OnnxoptError(f"{path}:{line}: {message}", hint)


def _validate(path: Path, data: Any) -> Recipe:
    if not isinstance(data, _Lined):
        _fail(path, 1, "a recipe is a mapping with 'model' and 'steps'", "see recipes/ for examples")
    for key in data:
        if key not in ("model", "steps", "name"):
            _fail(path, data.lines[key], f"unknown top-level key {key!r}", "known: name, model, steps")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        _fail(
            path,
            data.lines["model"],
            "'model' must be a folder, a hub id, or null",
            "null: the bundled MiniLM",
        )
    if isinstance(model, str) and (path.parent / model).exists():
        model = str((path.parent / model).resolve())
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        _fail(
            path, data.lines.get("steps", data.line), "'steps' must be a non-empty list", "e.g. - export: {}"
        )
    recipe = Recipe(path, model, name=str(data.get("name") or path.stem))
    seen: list[Step] = []
    for raw in raw_steps:
        seen.append(_step(path, raw, seen, data.lines.get("steps", 1)))
    if seen[0].kind != "export" and model is None:
        _fail(
            path, seen[0].line, "the first step needs a model", "start with `- export: {}`, or set model: DIR"
        )
    recipe.steps = seen
    return recipe


def _step(path: Path, raw: Any, earlier: list[Step], fallback_line: int) -> Step:
    line = getattr(raw, "line", fallback_line)
    if not isinstance(raw, _Lined) or len(raw) != 1:
        _fail(
            path, line, "each step is one mapping: `- KIND: {options}`", f"KIND is one of {', '.join(SCHEMA)}"
        )
    ((kind, options),) = raw.items()
    if kind not in SCHEMA:
        _fail(path, line, f"unknown step {kind!r}", f"known: {', '.join(SCHEMA)}")
    options = options if options is not None else _Lined()
    if not isinstance(options, dict):
        _fail(path, line, f"{kind}: options must be a mapping", "e.g. - quantize: {static: true}")
    lines = getattr(options, "lines", {})
    allowed = {**SCHEMA[kind], **_COMMON}
    for key, value in options.items():
        where = lines.get(key, line)
        if key not in allowed:
            _fail(path, where, f"{kind}: unknown option {key!r}", f"known: {', '.join(sorted(allowed))}")
        check, what = allowed[key]
        if not check(value):
            _fail(path, where, f"{kind}.{key}: expected {what}, got {value!r}", "fix the value")
    for key in REQUIRED.get(kind, ()):
        if key not in options:
            _fail(path, line, f"{kind}: option {key!r} is required", f"e.g. {key}: 0.5")
    if kind == "quantize" and bool(options.get("static")) == bool(options.get("dynamic")):
        _fail(path, line, "quantize: set exactly one of static: true and dynamic: true", "e.g. static: true")
    values = {k: v for k, v in options.items() if k not in _COMMON}
    for key in PATH_OPTIONS:
        if key in values and (path.parent / values[key]).exists():
            values[key] = str((path.parent / values[key]).resolve())
    name = options.get("name") or f"{len(earlier) + 1}-{kind}"
    if any(s.name == name for s in earlier):
        _fail(
            path, lines.get("name", line), f"step name {name!r} is used twice", "give each step its own name"
        )
    known = [s.name for s in earlier if s.kind in MODEL_STEPS]
    source = options.get("input")
    if source is not None and source not in known:
        _fail(
            path,
            lines["input"],
            f"{kind}.input: no earlier model step named {source!r}",
            f"earlier model steps: {', '.join(known) or 'none'}",
        )
    if kind != "export" and not known and source is None and kind in REPORT_STEPS:
        _fail(path, line, f"{kind}: no model to measure yet", "put it after a model step")
    if kind == "bench" and isinstance(values.get("models"), list):
        for m in values["models"]:
            if m not in known:
                _fail(
                    path,
                    lines["models"],
                    f"bench.models: no earlier model step named {m!r}",
                    f"earlier model steps: {', '.join(known) or 'none'}",
                )
    return Step(kind, name, values, line, source)
