"""The points of a space: every valid (prune, quantize, provider) combination, once, with a key a
person can read (`s0.5-no-heads+static-entropy`) and its place in the order of trials.

A point's coordinates say which other points are its cheaper ancestors (onnxopt.search.strategy):
the same pruning un-quantized, and the same quantization at each lower sparsity.
Options a mode does not read (calibration method for dynamic int8, block size for int8) are
dropped before points are told apart, so one model is never built twice under two names.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
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
# Each point is a trial that builds, scores and times a model (seconds to minutes each), and the
# plan's bookkeeping grows faster than the points (a 2,000-point chain of sparsities costs 24 s of
# it): a space past this many is a mistake in the space file, refused at once, never enumerated.
MAX_POINTS = 1_000
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


def _variants(
    options: dict[str, tuple], names: list[str], valid, fixed: dict | None = None
) -> Iterator[_Variant]:
    """Each valid combination of the `names` options' values, `fixed` added, one at a time (a space
    is counted before any is made: see `size`). `mode` is named by the key itself, and is no reason
    for a second tier."""
    for values in itertools.product(*(options[n] for n in names)):
        chosen = {**(fixed or {}), **dict(zip(names, values, strict=True))}
        if not valid(chosen):
            continue
        told = [n for n in names if chosen[n] != options[n][0]]
        yield _Variant(chosen, "".join(_label(n, chosen[n]) for n in told), not told)


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


def _read(quantize: dict[str, tuple], mode: str) -> list[str]:
    """The options `mode` reads: none reads none of them."""
    if mode == NONE:
        return []
    return [n for n in quantize if n != "mode" and n not in _IGNORED[mode]]


def _quant_valid(options: dict) -> bool:
    return options["mode"] == NONE or _valid(QuantizeConfig)(options)


def _sizes(space: Space) -> tuple[list[float], int, int, int]:
    """(the sparsities, pruning variants, quantization variants, providers), each count the product
    of its options' numbers of values: counted, never enumerated, and an upper bound (a combination
    a config refuses is counted too)."""
    sparsities = sorted(set(space.prune.get("sparsity", (0.0,))))
    prunes = math.prod(len(v) for n, v in space.prune.items() if n != "sparsity")
    quantize = space.quantize or {"mode": (NONE,)}
    quants = sum(math.prod(len(quantize[n]) for n in _read(quantize, m)) for m in quantize["mode"])
    return sparsities, prunes, quants, len(space.session.get("ep", ("cpu",)))


def size(space: Space) -> int:
    """How many points the space holds at most, reference excluded, in microseconds whatever its size."""
    sparsities, prunes, quants, eps = _sizes(space)
    pruned = sum(s > 0 for s in sparsities)
    unpruned = quants - (NONE in (space.quantize or {}).get("mode", (NONE,))) if 0 in sparsities else 0
    return (pruned * prunes * quants + unpruned) * eps


def points(space: Space) -> list[Point]:
    """Every point of the space except the reference itself (not pruned, not quantized), in order.
    A space past MAX_POINTS is refused before any point is made: 10^9 combinations once took all
    memory, and each point is a trial of seconds to minutes anyway."""
    count = size(space)
    if count > MAX_POINTS:
        raise OnnxoptError(
            f"the space has {count:,} combinations of values to try; a search takes at most {MAX_POINTS:,}",
            "narrow the space: fewer values per option in the space file",
        )
    sparsities = sorted(set(space.prune.get("sparsity", (0.0,))))
    names = [n for n in space.prune if n != "sparsity"]
    prune_check = _valid(PruneConfig, {"sparsity": 0.5})
    prunes = list(_variants(space.prune, names, prune_check)) if sparsities[-1] > 0 else [None]
    quantize = space.quantize or {"mode": (NONE,)}
    quants = [
        v
        for m in quantize["mode"]
        for v in _variants(quantize, _read(quantize, m), _quant_valid, {"mode": m})
    ]
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
