"""Accuracy-aware weight-only quantization for decoders: the fewest MatMuls at the wider width.

`--int4 --max-drop X` (or `--dynamic --max-drop X` on a decoder) measures perplexity through the
cache on held-back calibration text and moves the MatMuls whose low-width weights cost the most
to the next width (int4 -> 8 bits, 8 bits -> fp32) until the perplexity rise is at most X percent.

- Ranking: the same matrix in every layer is one role (q_proj, down_proj, ...). Each role is
  widened alone once and its perplexity measured; roles go in the order of the drop they remove
  per weight widened, and within a role by simulated relative output error
  ||X·Q(W) - X·W||² / ||X·W||² on the MatMul's real activations. On SmolLM2 int4 block 32 the
  down_proj matrices (fed by SwiGLU's products, the widest activations) come first; all 30 at
  8 bits took STS-B dev perplexity from +12.0% to +5.7% over fp32 (2026-12-02).
- Search: promoting the top k is taken as monotone in k, so the smallest k within the bound is
  found by bisection: about log2(candidates) trials, each spliced from two models quantized once
  (one at each width), so a trial costs one perplexity measurement, not a quantization.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import onnx

from onnxopt.graph_queries.int8_ops import int8_op_counts
from onnxopt.graph_queries.matmul_roles import lm_heads
from onnxopt.passes.base import Pass, PassResult
from onnxopt.passes.quantize_weights import QuantizeWeights
from onnxopt.quantize.search_report import MIXED_BITS, SearchReport
from onnxopt.quantize.widths import matmul_errors, splice

Progress = Callable[[str, int, int], None]


MAX_ROLES = 24  # more roles than this (graphs without module-path names): rank by error alone


def role_of(node_name: str) -> str:
    """A node's role: its name with the layer numbers taken out (`/model/layers.#/mlp/down_proj/MatMul`)."""
    return re.sub(r"\d+", "#", node_name)


def _sizes(model: onnx.ModelProto) -> dict[str, int]:
    dims = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    return {n.name: dims.get(n.input[1], 0) for n in model.graph.node if n.op_type == "MatMul"}


def rank_by_role(
    candidates, errors, sizes, build, metric, progress, base: float
) -> tuple[list[str], list[dict]]:
    """Candidates in the order to widen them. The same matrix in every layer is one role (q_proj,
    down_proj, ...); each role is widened alone once and measured, and roles go in the order of
    the drop they remove per weight widened; within a role, by simulated error. Why measured:
    the simulated error alone put o_proj and v_proj first on SmolLM2 int4, and its top 52 of 210
    took held-back perplexity only from +11.0% to +9.8%, where the 30 down_proj matrices alone
    reach +5.7% (STS-B dev text, 2026-12-02)."""
    by_error = sorted(candidates, key=lambda name: -errors[name])
    roles: dict[str, list[str]] = {}
    for name in by_error:
        roles.setdefault(role_of(name), []).append(name)
    if not 1 < len(roles) <= MAX_ROLES:
        return by_error, []
    measured = []
    for i, (role, names) in enumerate(roles.items(), 1):
        progress("measure roles", i, len(roles))
        measured.append({"role": role, "nodes": len(names), "drop": round(metric(build(names)), 3)})
    gain = {
        m["role"]: (base - m["drop"]) / max(sum(sizes.get(n, 0) for n in roles[m["role"]]), 1)
        for m in measured
    }
    order = sorted(roles, key=lambda role: -gain[role])
    return [name for role in order for name in roles[role]], measured


def bisect_promotions(ranked: list[str], build, metric, max_drop: float, progress: Progress, start: float):
    """The model with the fewest top-ranked nodes promoted whose drop is within `max_drop` (or,
    out of reach, the best measured), its count, and every (count, drop) tried; `start` is the
    drop with none promoted, measured already."""
    trials: dict[int, tuple[float, onnx.ModelProto]] = {0: (start, build([]))}

    def measure(k: int) -> float:
        progress("perplexity", len(trials) + 1, 0)
        model = build(ranked[:k])
        trials[k] = (metric(model), model)
        return trials[k][0]

    lo, hi = 0, len(ranked)
    if start > max_drop and ranked and measure(hi) <= max_drop:
        while hi - lo > 1:  # invariant: lo fails the bound, hi meets it
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if measure(mid) <= max_drop else (mid, hi)
    within = [k for k, (drop, _) in trials.items() if drop <= max_drop]
    best = min(within) if within else min(trials, key=lambda k: trials[k][0])
    tried = [{"promoted": k, "drop": round(drop, 3)} for k, (drop, _) in sorted(trials.items())]
    return trials[best][1], best, tried


class MixedBitsSearch(Pass):
    """The bisection between a model quantized at the low width (`low`, a Pass) and at the wider
    one (`widen`: model -> model; identity for fp32); the report says which nodes were promoted."""

    def __init__(
        self,
        low: Pass,
        widen,
        candidates,
        feeds,
        bits: int,
        block: int,
        metric,
        max_drop,
        progress,
        algo="rtn",
    ):
        self.low, self.widen = low, widen
        self.name = low.name + " (accuracy-aware)"
        self.candidates, self.feeds, self.bits, self.block = candidates, feeds, bits, block
        self.algo = algo  # the low width's quantizer, simulated to rank the nodes
        self.metric, self.max_drop, self.progress = metric, max_drop, progress
        self.kept_as = "fp32" if bits == 8 else "8-bit"
        self.report: SearchReport | None = None

    def call(self, model: onnx.ModelProto) -> PassResult:
        low = self.low.call(model).model
        self.progress("perplexity", 0, 0)
        start = self.metric(low)
        errors, ranked, roles = {}, list(self.candidates), []
        if start <= self.max_drop or not ranked:  # nothing to widen: no ranking, no second model
            best, count, trials = low, 0, [{"promoted": 0, "drop": round(start, 3)}]
        else:
            self.progress("rank nodes", 0, 0)
            errors = matmul_errors(model, self.feeds, self.candidates, self.bits, self.block, self.algo)
            high = self.widen(model)
            writes = {n.name: n.output[0] for n in model.graph.node}

            def build(names: list[str]) -> onnx.ModelProto:
                return splice(low, high, {writes[name] for name in names}) if names else low

            sizes = _sizes(model)
            ranked, roles = rank_by_role(ranked, errors, sizes, build, self.metric, self.progress, start)
            best, count, trials = bisect_promotions(
                ranked, build, self.metric, self.max_drop, self.progress, start
            )
        drops = {t["promoted"]: t["drop"] for t in trials}
        self.report = SearchReport(
            MIXED_BITS,
            self.metric.name,
            self.max_drop,
            drops[0],
            drops[count],
            drops[count] <= self.max_drop,
            len(ranked),
            self.kept_as,
            [{"node": n, "op_type": "MatMul", "error": round(errors[n], 6)} for n in ranked[:count]],
            trials,
            roles,
        )
        counts = {
            **int8_op_counts(best),
            "MatMulNBits": sum(n.op_type == "MatMulNBits" for n in best.graph.node),
        }
        return PassResult(best, True, {"int8_ops": counts, MIXED_BITS: self.report.as_dict()})


def mixed_bits_search(model, plan, exclude, calibration, low: Pass, metric, progress) -> MixedBitsSearch:
    """--max-drop on weight-only decoders: int4 MatMuls move to 8 bits (8 bits to fp32), the
    costliest first, until `metric` (perplexity on held-back text) is within the bound."""
    config, bits = plan.options, plan.weight_bits
    skip = set(exclude) | set(lm_heads(model) if bits == 4 else ())
    weights = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    candidates = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and n.name not in skip and n.input[1] in weights
    ]
    wide = QuantizeWeights(8, 32, "rtn", 4, exclude)

    def widen(m: onnx.ModelProto) -> onnx.ModelProto:
        return wide.call(m).model if bits == 4 else m

    block, algo = (config.block_size, config.algo) if bits == 4 else (32, "rtn")
    search = (candidates, calibration, bits, block, metric, config.max_drop, progress)
    return MixedBitsSearch(low, widen, *search, algo=algo)
