"""Recipes: a YAML file naming a model and the steps to apply, with the commands' own options.

    model: null              # the bundled MiniLM; a folder or hub id otherwise
    steps:
      - export: {}
      - quantize: {static: true, calib: 40}
      - eval: {task: sts, data: ../shared/data/stsb/sts-dev.csv}
      - bench: {batch: [1, 32]}

Validated before anything runs: each bad key or value is one error naming its line, and
every data file must exist. Relative paths are relative to the recipe file (else to the working
directory). Hostile input costs one short error: see recipe_checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxopt.errors import OnnxoptError, shorten
from onnxopt.recipes import checks, steps
from onnxopt.recipes.steps import MODEL_STEPS, REPORT_STEPS

# `name` is checked by recipe_checks.check_step_name (it becomes a folder under OUT).
_COMMON = {
    "name": (lambda v: True, "a plain name"),
    "input": (lambda v: isinstance(v, str) and v != "", "a string"),
}
# Every option of every step, from the workflows' configs: the commands' own options, by the same
# names (with `_` for `-`), types, choices and bounds.
SCHEMA = {kind: steps.schema(kind) for kind in steps.CONFIGS}
REQUIRED = {kind: steps.required(kind) for kind in steps.CONFIGS}
PATH_OPTIONS = ("calib_data", "eval_data", "data", "space")


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


def load(path: Path, model: str | None = None) -> Recipe:
    """Read and check a recipe. `model` (--model) replaces the recipe's own, which is then not checked."""
    return _validate(path, checks.parse(path), model)


def _fail(path: Path, line: int, message: str, hint: str) -> None:
    raise OnnxoptError(f"{path}:{line}: {message}", hint)


def _listing(names: list[str]) -> str:
    """Step names for a hint, cut like any echoed value."""
    text = ", ".join(names) or "none"
    return text if len(text) <= 100 else text[:97] + "..."


def _validate(path: Path, data: Any, model_override: str | None) -> Recipe:
    if not isinstance(data, checks.Lined):
        _fail(path, 1, "a recipe is a mapping with 'model' and 'steps'", "see recipes/ for examples")
    for key in data:
        if key not in ("model", "steps", "name"):
            _fail(path, data.lines[key], f"unknown top-level key {shorten(key)}", "known: name, model, steps")
    name = data.get("name") or path.stem
    if not isinstance(name, str) or len(name) > 100 or not name.isprintable():
        _fail(path, data.lines["name"], "'name' must be a one-line string", "e.g. name: minilm-int8")
    model = _model(path, data, model_override)
    raw_steps = data.get("steps")
    steps_line = data.lines.get("steps", data.line)
    if not isinstance(raw_steps, list) or not raw_steps:
        _fail(path, steps_line, "'steps' must be a non-empty list", "e.g. - export: {}")
    if len(raw_steps) > checks.MAX_STEPS:
        message = f"{len(raw_steps)} steps; a recipe may have at most {checks.MAX_STEPS}"
        _fail(path, steps_line, message, "split it into several recipes")
    seen = _Seen()
    steps = [_step(path, raw, seen, steps_line) for raw in raw_steps]
    if steps[0].kind != "export" and model is None:
        hint = "start with `- export: {}`, or set model: DIR"
        _fail(path, steps[0].line, "the first step needs a model", hint)
    return Recipe(path, model, steps, name)


def _model(path: Path, data: checks.Lined, override: str | None) -> str | None:
    if override is not None:
        return checks.resolve_model(override, Path.cwd(), "--model")
    model = data.get("model")
    if model is None:
        return None
    if not isinstance(model, str) or not model.strip():
        where = data.lines["model"]
        _fail(path, where, "'model' must be a folder, a hub id, or null", "null: the bundled MiniLM")
    return checks.resolve_model(model, path.parent, f"{path}:{data.lines['model']}: model")


@dataclass
class _Seen:
    """What the earlier steps define, as sets, so a long recipe is checked in linear time."""

    names: set[str] = field(default_factory=set)  # case-folded: two folders differing in case clash
    models: list[str] = field(default_factory=list)  # model steps, in order
    model_set: set[str] = field(default_factory=set)


def _step(path: Path, raw: Any, seen: _Seen, fallback_line: int) -> Step:
    line = getattr(raw, "line", fallback_line)
    if not isinstance(raw, checks.Lined) or len(raw) != 1:
        _fail(
            path, line, "each step is one mapping: `- KIND: {options}`", f"KIND is one of {', '.join(SCHEMA)}"
        )
    ((kind, options),) = raw.items()
    if kind not in SCHEMA:
        _fail(path, line, f"unknown step {shorten(kind)}", f"known: {', '.join(SCHEMA)}")
    options = options if options is not None else checks.Lined()
    if not isinstance(options, dict):
        _fail(path, line, f"{kind}: options must be a mapping", "e.g. - quantize: {static: true}")
    lines = getattr(options, "lines", {})
    _check_options(path, kind, options, lines, line)
    name = options.get("name", f"{len(seen.names) + 1}-{kind}")
    checks.check_step_name(name, f"{path}:{lines.get('name', line)}")
    if name.casefold() in seen.names:
        _fail(
            path,
            lines.get("name", line),
            f"step name {name!r} is used twice",
            "give each step its own name (names differing only in case count as the same)",
        )
    values = {k: v for k, v in options.items() if k not in _COMMON}
    _check_references(path, kind, values, lines, line, seen, options.get("input"))
    _check_data(path, kind, values, lines, line)
    _check_rules(path, kind, values, line)
    seen.names.add(name.casefold())
    if kind in MODEL_STEPS:
        seen.models.append(name)
        seen.model_set.add(name)
    return Step(kind, name, values, line, options.get("input"))


def _check_options(path: Path, kind: str, options: dict, lines: dict, line: int) -> None:
    allowed = {**SCHEMA[kind], **_COMMON}
    for key, value in options.items():
        where = lines.get(key, line)
        if key not in allowed:
            _fail(
                path, where, f"{kind}: unknown option {shorten(key)}", f"known: {', '.join(sorted(allowed))}"
            )
        check, what = allowed[key]
        if not check(value):
            _fail(path, where, f"{kind}.{key}: expected {what}, got {shorten(value)}", "fix the value")
    for key in REQUIRED.get(kind, ()):
        if key not in options:
            _fail(path, line, f"{kind}: option {key!r} is required", f"e.g. {key}: 0.5")


def _check_rules(path: Path, kind: str, values: dict, line: int) -> None:
    """The rules between options are the config's own, as on the command line; checked last, so
    the more precise messages of the checks above come first."""
    try:
        # eval's reference may be a step name, checked above: the rules only ask whether one is given.
        given = {k: (str(v) if k == "reference" else v) for k, v in values.items()}
        steps.config_for(kind, given)
    except OnnxoptError as exc:
        _fail(path, line, f"{kind}: {steps.recipe_words(exc.message)}", steps.recipe_words(exc.hint))


def _check_references(path, kind, values, lines, line, seen: _Seen, source) -> None:
    """`input`, bench's `models` and eval's `reference` name earlier model steps (or, for
    `reference`, a model folder)."""
    if source is not None and source not in seen.model_set:
        _fail(
            path,
            lines["input"],
            f"{kind}.input: no earlier model step named {shorten(source)}",
            f"earlier model steps: {_listing(seen.models)}",
        )
    if not seen.models and source is None and kind in REPORT_STEPS:
        _fail(path, line, f"{kind}: no model to measure yet", "put it after a model step")
    if kind == "bench" and isinstance(values.get("models"), list):
        for m in values["models"]:
            if m not in seen.model_set:
                _fail(
                    path,
                    lines["models"],
                    f"bench.models: no earlier model step named {shorten(m)}",
                    f"earlier model steps: {_listing(seen.models)}",
                )
    if kind != "eval":
        return
    reference = values.get("reference")
    if reference is not None and reference not in seen.model_set:
        found = checks.find_path(reference, path.parent)
        if found is None or not found.is_dir():
            _fail(
                path,
                lines["reference"],
                f"eval.reference: no earlier model step or model folder named {checks.echo(reference)}",
                f"earlier model steps: {_listing(seen.models)}",
            )
        values["reference"] = str(found)
    evaluated = source or seen.models[-1]  # there is one: checked above
    if values.get("task", "fidelity") == "fidelity" and reference is None and evaluated == seen.models[0]:
        _fail(path, line, "eval: fidelity compares two models, and this is the first", "add reference: STEP")


def _check_data(path: Path, kind: str, values: dict, lines: dict, line: int) -> None:
    """What the library would refuse only when the step runs, after the earlier steps' work: a
    missing data file or option. Each data option becomes an absolute path (or stays a hub name)."""
    if kind == "quantize" and "eval_data" in values and "max_drop" not in values:
        _fail(path, lines["eval_data"], "quantize.eval_data is used by the max_drop search", "add max_drop")
    if kind == "eval" and values.get("task", "fidelity") != "fidelity" and "data" not in values:
        _fail(path, line, f"eval: the {values['task']} task needs data: FILE", "e.g. data: sts-dev.csv")
    samples = {"calib_data": True, "eval_data": False, "space": False}
    samples["data"] = kind == "eval" and values.get("task", "fidelity") == "fidelity"
    for key in PATH_OPTIONS:
        if key in values:
            where = f"{path}:{lines.get(key, line)}"
            values[key] = checks.resolve_data(f"{kind}.{key}", values[key], path.parent, samples[key], where)
