"""A command's typer options, derived from its workflow's config dataclass (onnxopt.options).

Each config field becomes one option, named, typed, defaulted, limited to its choices and
documented as the field says; list fields are given comma separated (`--batch 1,32`,
`--exclude a,b`), bools as `--flag` or `--flag/--no-flag`, a choice with `as_flags` as one flag
per value (`--static`, `--dynamic`). The command function receives the values, builds the config
(which checks them) and calls the command's `run`. Light: typer and the standard library only.
"""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import typer

from onnxopt.options import Field, chosen_flag, fields_of, parse_list

KW = inspect.Parameter.KEYWORD_ONLY
_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _flag_name(f: Field) -> str:
    return f.name.replace("_", "-")


def _bool_option(f: Field) -> inspect.Parameter:
    name = _flag_name(f)
    if f.optional or f.default is True:  # tri-state (default: decided by the workflow) or on by default
        option = typer.Option(f.default, f"--{name}/--no-{name}", help=f.spec.help)
    else:
        option = typer.Option(False, f"--{name}", help=f.spec.help)
    return inspect.Parameter(f.name, KW, default=option, annotation=bool | None if f.optional else bool)


def _value_option(f: Field) -> inspect.Parameter:
    extra: dict[str, Any] = {"help": f.spec.help, "metavar": f.spec.metavar or _METAVARS.get(f.base)}
    if f.is_list:
        shown = ",".join(str(v) for v in f.default) if f.default else "none"
        among = f"; of {', '.join(f.spec.choices)}" if f.spec.choices else ""
        extra["help"] = f"{f.spec.help} Comma separated{among} (default: {shown})."
        extra["metavar"] = f.spec.metavar or "A,B"
        return inspect.Parameter(
            f.name, KW, default=typer.Option(None, f.flag, **extra), annotation=str | None
        )
    annotation = f.base | None if f.optional else f.base
    default = ... if f.required else f.default
    if f.spec.choices:  # typer checks an Enum's values and lists them in the usage error
        choices = _choices(f.name, f.spec.choices)
        annotation = choices | None if f.optional else choices
        default = ... if f.required else None if f.default is None else choices(f.default)
        extra["metavar"] = f.spec.metavar or "|".join(f.spec.choices)
    return inspect.Parameter(
        f.name, KW, default=typer.Option(default, f.flag, **extra), annotation=annotation
    )


@functools.cache
def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    return enum.Enum(name, {v: v for v in values}, type=str)


def parameters(config_class: type) -> list[inspect.Parameter]:
    """The typer parameters of every command-line field of `config_class`."""
    found = []
    for f in fields_of(config_class):
        if not f.spec.cli:
            continue
        if f.spec.as_flags:
            helps = f.spec.choice_help or tuple(f"{choice}: {f.spec.help}" for choice in f.spec.choices)
            found += [
                inspect.Parameter(
                    choice, KW, default=typer.Option(False, f"--{choice}", help=text), annotation=bool
                )
                for choice, text in zip(f.spec.choices, helps, strict=True)
            ]
        elif f.base is bool:
            found.append(_bool_option(f))
        else:
            found.append(_value_option(f))
    return found


def build(config_class: type, values: dict[str, Any]):
    """The config from the command line's values (lists still comma-separated strings)."""
    kwargs = {}
    for f in fields_of(config_class):
        if not f.spec.cli:
            continue
        if f.spec.as_flags:
            kwargs[f.name] = chosen_flag(f, values, none_ok=True)
        elif f.is_list:
            if values.get(f.name) is not None:
                kwargs[f.name] = parse_list(f, values[f.name])
        elif f.name in values:
            value = values[f.name]
            kwargs[f.name] = value.value if isinstance(value, enum.Enum) else value
    return config_class(**kwargs)


def command(
    config_class: type | None,
    run: Callable[..., None],
    help: str,
    arguments: Sequence[inspect.Parameter] = (),
    extras: Sequence[inspect.Parameter] = (),
) -> Callable[..., None]:
    """A typer command: `arguments` (positional), the config's options, then `extras` (-o,
    --overwrite, --json); it builds the config and calls `run(config, **arguments_and_extras)`."""
    own = parameters(config_class) if config_class is not None else []
    names = {p.name for p in own}

    def command_function(**values: Any) -> None:
        config = build(config_class, {k: values[k] for k in names}) if config_class is not None else None
        run(config, **{k: v for k, v in values.items() if k not in names})

    command_function.__signature__ = inspect.Signature([*arguments, *own, *extras])  # type: ignore[attr-defined]
    command_function.__doc__ = help
    return command_function
