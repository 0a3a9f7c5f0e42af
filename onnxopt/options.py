"""One options dataclass per workflow, each option written once.

A workflow's config (QuantizeConfig, PruneConfig, ...) declares every option as a dataclass field
with `option(default, help, ...)`: its type comes from the annotation, its bounds and choices
from the arguments. The command line (onnxopt.cli.options) and the recipe schema
(onnxopt.recipes.schema) are derived from these fields, and the workflow takes the config
itself, so an option's name, type, default, choices and help cannot drift between them (they
did: recipes could not ask for --qdq, bench's library default min_seconds was 0 and the CLI's 2).

This module is imported by the CLI before anything heavy: it imports nothing beyond the standard
library and onnxopt.errors.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from onnxopt.errors import OnnxoptError, shorten


@dataclass(frozen=True)
class Spec:
    """What a field's annotation cannot say."""

    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None  # bounds; inclusive unless open_low / open_high
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    # A choice spelled as one flag per value on the command line and one boolean key per value in
    # recipes (--static / --dynamic, `static: true`), exactly one of them given.
    as_flags: bool = False
    choice_help: tuple[str, ...] = ()  # with as_flags: each flag's own help, in the order of choices
    cli: bool = True  # on the command line
    recipe: bool = True  # in recipes
    metavar: str | None = None


VERIFY_HELP = "Load OUTPUT with optimum's ORTModelFor<Task> and compare with the input."


def option(default: Any = MISSING, help: str = "", **spec: Any) -> Any:
    """A config field: `default` (MISSING for a required option), `help`, and Spec's arguments."""
    return dataclasses.field(default=default, metadata={"onnxopt": Spec(help=help, **spec)})


@dataclass(frozen=True)
class Field:
    """One option as the CLI and the recipe schema see it."""

    name: str
    base: type  # bool, int, float, str or Path
    optional: bool  # None is allowed
    is_list: bool  # a tuple of `base`
    default: Any
    spec: Spec

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _unwrap(annotation: Any) -> tuple[type, bool, bool]:
    """(base type, optional, is a list) of an annotation such as `int | None` or `tuple[str, ...]`."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], optional, True
    return annotation, optional, False


def fields_of(config_class: type) -> list[Field]:
    hints = typing.get_type_hints(config_class)
    found = []
    for f in dataclasses.fields(config_class):
        if "onnxopt" not in f.metadata:
            continue
        base, optional, is_list = _unwrap(hints[f.name])
        found.append(Field(f.name, base, optional, is_list, f.default, f.metadata["onnxopt"]))
    return found


def describe(f: Field, recipe: bool = False) -> str:
    """What a valid value of the field is, for error messages: 'a positive integer', 'one of ...'.
    In a recipe, an option that may be unset takes `null`."""
    what = f"a list of {_items(f)}" if f.is_list else _item(f)
    return what + (", or null" if recipe and f.optional and f.default is None and f.base is not bool else "")


def _item(f: Field) -> str:
    if f.spec.choices:
        return f"one of {', '.join(f.spec.choices)}"
    if f.base is bool:
        return "true or false"
    if f.base in (int, float):
        return _number(f)
    return "a path" if f.base is Path else "a string"


def _items(f: Field) -> str:
    """A list field's items, in the plural: 'positive integers', 'values among MatMul, Gemm'."""
    if f.spec.choices:
        return f"values among {', '.join(f.spec.choices)}"
    return _plural(_item(f))


def _number(f: Field) -> str:
    noun = "an integer" if f.base is int else "a number"
    low, high = f.spec.low, f.spec.high
    if low is not None and high is not None:
        left, right = "(" if f.spec.open_low else "[", ")" if f.spec.open_high else "]"
        return f"{noun} in {left}{low:g}, {high:g}{right}"
    if low == 1 and f.base is int:
        return "a positive integer"
    if low == 0 and not f.spec.open_low:
        return f"{noun}, 0 or more"
    if low is not None:
        return f"{noun} {'above' if f.spec.open_low else 'of at least'} {low:g}"
    return noun


def _plural(what: str) -> str:
    for one, many in (("a positive integer", "positive integers"), ("an integer", "integers"),
                      ("a number", "numbers"), ("a string", "strings"), ("a path", "paths")):  # fmt: skip
        what = what.replace(one, many)
    return what


def _fits_number(f: Field, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if f.base is int and not isinstance(value, int):
        return False
    if not math.isfinite(value):  # `.inf` seconds would never end, `.nan` never compare
        return False
    low, high = f.spec.low, f.spec.high
    if low is not None and (value < low or (f.spec.open_low and value == low)):
        return False
    return high is None or (value < high or (not f.spec.open_high and value == high))


def fits(f: Field, value: Any) -> bool:
    """Whether a typed value (from YAML, or already converted from the command line) is valid."""
    if value is None:
        return f.optional
    if f.is_list:
        if not isinstance(value, (list, tuple)):
            return False
        # Empty only where the default is: --exclude may name no node, --batch must name a size.
        return (bool(value) or f.default == ()) and all(_fits_item(f, item) for item in value)
    return _fits_item(f, value)


def _fits_item(f: Field, value: Any) -> bool:
    if f.spec.choices:
        return isinstance(value, str) and value in f.spec.choices
    if f.base is bool:
        return isinstance(value, bool)
    if f.base in (int, float):
        return _fits_number(f, value)
    return isinstance(value, (str, Path)) and str(value) != ""


def parse_list(f: Field, text: str) -> tuple:
    """A list option as the command line gives it: comma separated, e.g. `--batch 1,32`."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    try:
        values = tuple(f.base(item) for item in items)
    except ValueError:
        values = ()
    if not values or not all(_fits_item(f, v) for v in values):
        raise OnnxoptError(
            f"{f.flag} takes {_items(f)} separated by commas, got {shorten(text)}",
            f"e.g. {f.flag} {f.spec.metavar or '1,32'}",
        )
    return values


class Options:
    """Base of the config dataclasses: each value is checked against its field on creation, so a
    config built in Python, from the command line or from a recipe is valid or not at all."""

    def __post_init__(self) -> None:
        for f in fields_of(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if f.required and value is MISSING:
                raise OnnxoptError(f"{f.flag} is required", f"e.g. {f.flag} {f.spec.metavar or 'VALUE'}")
            if not fits(f, value):
                raise OnnxoptError(
                    f"{f.flag} must be {describe(f)}, got {shorten(value)}", f"see {f.flag} in --help"
                )
        self.check()

    def check(self) -> None:
        """Rules between options (exactly one of --static and --dynamic, say); none by default."""

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields_of(type(self))}


def config_from(config_class: type, config: Any, options: dict[str, Any]):
    """A workflow's config: the one given, or one built from keyword options
    (`quantize(src, out, mode="static", calib=40)` reads as the command line does)."""
    if config is not None and options:
        raise TypeError(f"pass a {config_class.__name__} or keyword options, not both")
    return config if config is not None else config_class(**options)


def exactly_one(choices: Sequence[str], spelled: Callable[[str], str] = "--{}".format, verb="choose") -> str:
    """`choose exactly one of --static, --dynamic and --int4`: each choice as `spelled` writes it
    (a flag on the command line, `static: true` in a recipe)."""
    return f"{verb} exactly one of {listing(spelled(c) for c in choices)}"


def chosen_flag(
    f: Field,
    values: Mapping[str, Any],
    spelled: Callable[[str], str] | None = None,
    verb="choose",
    none_ok=False,
) -> str | None:
    """The value of an `as_flags` field: the one of its choices set in `values` (choice -> given).
    Two or more are refused, and none unless `none_ok` (the command line leaves that to the
    config's own check, whose hint shows a whole command)."""
    spelled = spelled or "--{}".format
    chosen = [c for c in f.spec.choices if values.get(c)]
    if len(chosen) > 1 or not (chosen or none_ok):
        raise OnnxoptError(exactly_one(f.spec.choices, spelled, verb), f"e.g. {spelled(f.spec.choices[0])}")
    return chosen[0] if chosen else None


def listing(items) -> str:
    """`a, b and c`."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
