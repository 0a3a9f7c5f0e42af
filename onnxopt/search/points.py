"""The points of a space: every valid (prune, quantize, provider) combination, once, with a key a
person can read (`s0.5-no-heads+static-entropy`) and its place in the order of trials.

A point's coordinates say which other points are its cheaper ancestors (onnxopt.search.strategy):
the same pruning un-quantized, and the same quantization at each lower sparsity.
Options a mode does not read (calibration method for dynamic int8, block size for int8) are
dropped before points are told apart, so one model is never built twice under two names.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from onnxopt.errors import OnnxoptError
from onnxopt.prune.config import PruneConfig
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.search.space import NONE, Space

# Options each quantization mode ignores.
_IGNORED = {
    "dynamic": {"method", "dynamic_gelu", "block_size", "algo", "accuracy_level"},
    "static": {"block_size", "algo", "accuracy_level"},
    "int4": {"method", "dynamic_gelu", "target", "qdq"},
}
_SHORT = {"block_size": "b", "sparsity": "s", "accuracy_level": "level"}


@dataclass(frozen=True)
class Point:
    key: str
    prune: dict[str, Any] | None  # PruneConfig's options (recipe names); None: not pruned
    quantize: dict[str, Any] | None  # QuantizeConfig's, `mode` included; None: not quantized
    ep: str
    # Coordinates: which pruning variant (None: not pruned), sparsity, quantization variant, provider.
    prune_variant: int | None
    sparsity: float
    quant_variant: int
    ep_index: int
    tier: int  # 1: the first value of every option but sparsity, mode and the pruned units; 2: others

    @property
    def order(self) -> tuple:
        """Trials run in this order: every ancestor comes before its descendants."""
        variant = -1 if self.prune_variant is None else self.prune_variant
        return (self.tier, variant, self.sparsity, self.quant_variant, self.ep_index)

    @property
    def settings(self) -> dict[str, Any]:
        return {"prune": self.prune, "quantize": self.quantize, "ep": self.ep}


@dataclass(frozen=True)
class _Variant:
    options: dict[str, Any]
    label: str  # the varying options' non-first values, for the key
    primary: bool  # every option at its first value


def _variants(options: dict[str, tuple], skip: set[str], valid, normalize=lambda o: o) -> list[_Variant]:
    """Every combination of the options' values (but those in `skip`), valid and distinct. `mode`
    is named by the key itself, and is no reason for a second tier."""
    names = [n for n in options if n not in skip]
    found: dict[str, _Variant] = {}
    for values in itertools.product(*(options[n] for n in names)):
        chosen = normalize(dict(zip(names, values, strict=True)))
        if not valid(chosen):
            continue
        told = [n for n in names if n != "mode" and n in chosen and chosen[n] != options[n][0]]
        label = "".join(_label(n, chosen[n]) for n in told)
        primary = not told
        signature = repr(sorted(chosen.items()))
        found.setdefault(signature, _Variant(chosen, label, primary))
    return list(found.values())


def _label(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"-{name.replace('_', '-')}" if value else f"-no-{name.replace('_', '-')}"
    if value is None:
        return f"-{name.replace('_', '-')}-auto"
    if isinstance(value, (int, float)):
        return f"-{_SHORT.get(name, name.replace('_', '-'))}{value:g}"
    if isinstance(value, tuple):
        return f"-{name.replace('_', '-')}=" + ",".join(map(str, value))
    return f"-{value}"


def _valid(config_class, extra: dict | None = None):
    def check(options: dict) -> bool:
        try:
            config_class(**options, **(extra or {}))
        except OnnxoptError:
            return False
        return True

    return check


def _without_ignored(options: dict) -> dict:
    if options["mode"] == NONE:
        return {"mode": NONE}
    return {k: v for k, v in options.items() if k not in _IGNORED[options["mode"]]}


def _quant_valid(options: dict) -> bool:
    return options["mode"] == NONE or _valid(QuantizeConfig)(options)


def points(space: Space) -> list[Point]:
    """Every point of the space except the reference itself (not pruned, not quantized), in order."""
    sparsities = sorted(set(space.prune.get("sparsity", (0.0,))))
    prunes = _variants(space.prune, {"sparsity"}, _valid(PruneConfig, {"sparsity": 0.5}))
    quants = _variants(space.quantize or {"mode": (NONE,)}, set(), _quant_valid, _without_ignored)
    if not prunes or not quants:
        raise OnnxoptError("the space has no valid combination of options", "check the space file's values")
    eps = list(space.session.get("ep", ("cpu",)))
    found = []
    for s in sparsities:
        for p_index, prune in enumerate(prunes) if s > 0 else [(None, None)]:
            for q_index, quant in enumerate(quants):
                if s == 0 and quant.options["mode"] == NONE:
                    continue  # the reference
                for e_index, ep in enumerate(eps):
                    found.append(_point(s, p_index, prune, q_index, quant, e_index, ep))
    return sorted(found, key=lambda p: p.order)


def _point(s, p_index, prune, q_index, quant, e_index, ep) -> Point:
    mode = quant.options["mode"]
    parts = []
    if s > 0:
        parts.append(f"s{s:g}{prune.label}")
    if mode != NONE:
        parts.append(mode + quant.label)
    key = "+".join(parts) + (f"@{ep}" if e_index else "")
    primary = quant.primary or mode == NONE
    return Point(
        key=key,
        prune={"sparsity": s, **prune.options} if s > 0 else None,
        quantize=dict(quant.options) if mode != NONE else None,
        ep=ep,
        prune_variant=p_index,
        sparsity=s,
        quant_variant=q_index,
        ep_index=e_index,
        tier=1 if primary and e_index == 0 else 2,
    )
