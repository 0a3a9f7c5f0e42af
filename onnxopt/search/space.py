"""The search space: which values of which step options to try, by the recipe options' names.

    prune:    {sparsity: [0, 0.3, 0.5], heads: [true, false]}   # 0: not pruned; heads false: FFN only
    quantize: {mode: [none, static, dynamic], method: [minmax, entropy]}   # none: not quantized
    session:  {ep: [cpu]}

Each option takes one value or a list of values to try (a list option, such as `ops`, a list of
lists); the file narrows or widens the built-in space for the model (an encoder or a causal LM):
the options it names replace the built-in values, the others keep theirs. Checked like a recipe:
each unknown section or option, or bad value, is one error naming its line. An option's check is
its config field's (onnxopt.options), as the command line's and the recipe schema's are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxopt.choices import PROVIDERS, QUANTIZE_MODES
from onnxopt.errors import OnnxoptError, shorten
from onnxopt.io import yaml_lines
from onnxopt.options import Field, describe, fields_of, fits
from onnxopt.prune.config import PruneConfig
from onnxopt.quantize.config import QuantizeConfig

KIND = yaml_lines.Kind("space file", "space files", "see `onnxopt search --help` and the README's Search")
NONE = "none"  # quantize.mode: not quantized (prune.sparsity 0: not pruned)
# What a trial may not set: the search checks loading itself, and a session only has a provider.
_LEFT_OUT = {"verify_loading"}
_SESSION = {"ep": (lambda v: v in PROVIDERS, f"one of {', '.join(PROVIDERS)}")}

ENCODER = {
    "prune": {"sparsity": (0.0, 0.3, 0.5, 0.6, 0.7), "heads": (True, False)},
    "quantize": {
        "mode": (NONE, "static", "dynamic"),
        "method": ("minmax", "entropy"),
        "smooth": (None, False),
    },
    "session": {"ep": ("cpu",)},
}
# Causal LMs: int4 weight-only is what their decode wants (every weight read once per token).
DECODER = {
    "prune": {"sparsity": (0.0, 0.25, 0.5)},
    "quantize": {"mode": (NONE, "dynamic", "int4"), "block_size": (32, 128)},
    "session": {"ep": ("cpu",)},
}


@dataclass(frozen=True)
class Space:
    """Each section's options -> the values to try (in order: the first is tried first)."""

    prune: dict[str, tuple] = field(default_factory=dict)
    quantize: dict[str, tuple] = field(default_factory=dict)
    session: dict[str, tuple] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, list]]:
        return {
            s: {k: list(v) for k, v in getattr(self, s).items()} for s in ("prune", "quantize", "session")
        }


def fields(section: str) -> dict[str, Field]:
    config = {"prune": PruneConfig, "quantize": QuantizeConfig}[section]
    return {f.name: f for f in fields_of(config) if f.spec.recipe and f.name not in _LEFT_OUT}


def default_space(decoder: bool) -> Space:
    base = DECODER if decoder else ENCODER
    return Space(**{section: dict(options) for section, options in base.items()})


def load_space(path: Path | None, decoder: bool) -> Space:
    """The built-in space for the model, with the file's options in place of the built-in ones."""
    space = default_space(decoder)
    if path is None:
        return space
    data = yaml_lines.parse(path, KIND)
    if data is None:
        return space
    if not isinstance(data, yaml_lines.Lined):
        _fail(
            path,
            1,
            "a space file is a mapping of prune, quantize and session",
            "e.g. prune: {sparsity: [0, 0.5]}",
        )
    for section, options in data.items():
        line = data.lines[section]
        if section not in ("prune", "quantize", "session"):
            _fail(path, line, f"unknown section {shorten(section)}", "known: prune, quantize, session")
        if options is None:
            continue
        if not isinstance(options, dict):
            _fail(path, line, f"{section}: expected a mapping of options", "e.g. prune: {sparsity: [0, 0.5]}")
        getattr(space, section).update(_section(path, section, options, getattr(options, "lines", {}), line))
    return space


def _fail(path: Path, line: int, message: str, hint: str) -> None:
    raise OnnxoptError(f"{path}:{line}: {message}", hint)


def _section(path: Path, section: str, options: dict, lines: dict, line: int) -> dict[str, tuple]:
    checks = _checks(section)
    found = {}
    for key, value in options.items():
        where = lines.get(key, line)
        if key not in checks:
            known = ", ".join(sorted(checks))
            _fail(path, where, f"{section}: unknown option {shorten(key)}", f"known: {known}")
        check, what, is_list = checks[key]
        values = _values(value, is_list)
        if not values:
            _fail(path, where, f"{section}.{key}: expected a value or a list of values", "e.g. [0, 0.5]")
        for v in values:
            if not check(v):
                _fail(path, where, f"{section}.{key}: expected {what}, got {shorten(v)}", "fix the value")
        found[key] = tuple(dict.fromkeys(_hashable(_data_path(path, key, v)) for v in values))
    return found


def _data_path(path: Path, key: str, value: Any) -> Any:
    """A data file named in the space, read from the space file's folder first (as a recipe's)."""
    if key in ("calib_data", "eval_data") and isinstance(value, str) and (path.parent / value).exists():
        return str((path.parent / value).resolve())
    return value


def _values(value: Any, is_list: bool) -> list:
    """One value or several: a list option's values are lists themselves."""
    if is_list:
        several = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
        return list(value) if several else [value]
    return list(value) if isinstance(value, list) else [value]


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _checks(section: str) -> dict[str, tuple]:
    """key -> (check, what a valid value is, whether the option is a list)."""
    if section == "session":
        return {k: (check, what, False) for k, (check, what) in _SESSION.items()}
    checks = {}
    for f in fields(section).values():
        if f.name == "mode":  # `static: true` in a recipe; here a list of modes, `none` included
            modes = (NONE, *QUANTIZE_MODES)
            checks["mode"] = (lambda v, m=modes: v in m, f"one of {', '.join(modes)}", False)
        else:
            checks[f.name] = (lambda v, f=f: fits(f, v), describe(f, recipe=True), f.is_list)
    return checks
