"""Activation smoothing (SmoothQuant, Xiao et al. 2023) folded into the ONNX graph.

A few hidden channels of transformer activations are much larger than the rest, so one int8
scale per tensor spends its levels on them. Dividing channel j of an activation X by s_j and
multiplying row j of every weight it feeds by s_j leaves X·W unchanged and moves the difficulty
into the weights, which are quantized per output channel. With
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), alpha is searched per activation on calibration rows
by simulating int8 on both sides.

The division is folded where it costs nothing:
- into the gamma and beta of the LayerNormalization / SkipLayerNormalization /
  EmbedLayerNormalization that produces X; in a post-LN encoder (BERT) the same output also feeds
  the residual branch, which gets a Mul by s to see the original values;
- into the gamma of an RMSNorm (decoders: Llama, Qwen2, Mistral), unfused (the final Mul by gamma,
  found by the graph's shape: onnxopt.graph_queries.smooth_producers) or fused (SimplifiedLayerNormalization,
  SkipSimplifiedLayerNormalization, RMSNormalization); a pre-norm decoder's residual reads the
  norm's input, so no Mul is needed there;
- into the V columns (weights and bias) of a fused Attention op, whose output channels are the
  value channels, for the attention output projection.

With `explicit` (the OpenVINO layout) nothing is folded: a Mul by 1/s feeds the weights alone, after
each LayerNorm and each attention context Reshape, as NNCF's SmoothQuant places it, and the
residual reads the LayerNorm itself. OpenVINO fuses that Mul with the QuantizeLinear after it;
folded, its FakeQuantize stood alone: MiniLM batch 32 on OpenVINO, 18 standalone FakeQuantize
layers took 5.5 of 112 ms (Intel Xeon AMX, 2026-12-02).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.graph_queries.smooth_error import exact_products, quant_error, smoothing_scales
from onnxopt.graph_queries.smooth_groups import SmoothGroup, find_groups
from onnxopt.graph_queries.smooth_producers import constant_aliases
from onnxopt.io import weight_store
from onnxopt.io.external_data import graph_reads
from onnxopt.passes.base import Pass, PassResult, copy_model
from onnxopt.passes.graph_edits import drop_orphaned_identities

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


class Smooth(Pass):
    """Fold per-channel smoothing scales into the graph, alpha chosen per activation.

    `stats` maps each group's tensor to its onnxopt.quantize.calibrate.ChannelStats, or is a
    function `stats(model, tensors)` that collects them for the tensors this pass will smooth:
    then the pass finds its groups itself, with its own `gates` and `explicit`, so a caller cannot
    calibrate another set. `alphas` are the candidates (a fixed alpha: one value). A group whose
    best simulated error is not below the unsmoothed one is left alone.

    details: `smoothed` (one entry per smoothed activation) and `skipped` ({tensor: reason} for
    every candidate activation left alone).
    """

    name = "smooth"
    # Functional, but not a FunctionalPass: it reads (and calibrates) its input before the copy.
    in_place = False  # works on a copy: the caller's model keeps its unsmoothed weights
    changes_input = False

    def __init__(
        self,
        stats: dict | Callable[[onnx.ModelProto, list[str]], dict],
        alphas: tuple[float, ...] = ALPHAS,
        only_if_better: bool = True,
        error=None,
        gates: bool = False,
        explicit: bool = False,
        on_group: Callable[[int, int], None] | None = None,
    ):
        self.gates, self.explicit = gates, explicit
        self.on_group = on_group  # (groups done, groups): a 1B model's search takes minutes
        self.stats = stats
        self.alphas = alphas
        self.only_if_better = only_if_better
        # The simulated error alpha is chosen by: int8 activations and weights by default; int4
        # weight-only (graph_queries.weight_grids.weight_only_error) protects the channels that
        # matter to the activations instead, as AWQ does.
        self.error = error or quant_error

    def call(self, model: onnx.ModelProto) -> PassResult:
        return self._smooth(model, owned=False)

    def call_owned(self, model: onnx.ModelProto) -> PassResult:
        return self._smooth(model, owned=True)

    def _smooth(self, model: onnx.ModelProto, owned: bool) -> PassResult:
        # Groups and statistics come from the input, before the copy: calibration runs the model
        # while one copy exists, as when the caller calibrated first. Groups hold names only.
        groups, skipped = find_groups(model, self.gates, self.explicit)
        found = self.stats(model, [g.tensor for g in groups]) if callable(self.stats) else self.stats
        read_before = graph_reads(model.graph)
        model_copy = model if owned else copy_model(model)
        inits = {t.name: t for t in model_copy.graph.initializer}
        aliases = constant_aliases(model_copy)  # rescaled through a copy, which may orphan the Identity
        inits.update({alias: inits[name] for alias, name in aliases.items()})
        nodes = {n.name: n for n in model_copy.graph.node}
        applied, muls = [], {}
        for done, group in enumerate(groups):
            if self.on_group is not None:
                self.on_group(done, len(groups))
            stats = found.get(group.tensor)
            if stats is None:
                skipped[group.tensor] = "no calibration statistics"
                continue
            weights = [
                _rows_first(weight_store.array(inits[w]), t).astype(np.float64) for _, w, t in group.weights
            ]
            absmax_w = np.max([np.abs(w).max(1) for w in weights], axis=0)
            weights = [_searched_columns(w) for w in weights]
            exact = exact_products(stats, weights)  # one reference for every alpha
            base = self.error(stats, weights, np.ones_like(absmax_w), exact=exact)
            tried = [
                (self.error(stats, weights, smoothing_scales(stats.absmax, absmax_w, a), exact=exact), a)
                for a in self.alphas
            ]
            error, alpha = min(tried)
            if self.only_if_better and error >= base:
                skipped[group.tensor] = f"no alpha lowers the simulated error ({base:.2e})"
                continue
            scales = smoothing_scales(stats.absmax, absmax_w, alpha)
            _apply(model_copy, group, scales, inits, nodes, muls)
            applied.append(
                {
                    "tensor": group.tensor,
                    "alpha": alpha,
                    "error_before": base,
                    "error_after": error,
                    "weights": [n for n, _, _ in group.weights],
                    "residual_muls": 0 if group.fold == "mul" else len(group.others),
                }
            )
        if muls:  # each Mul goes right after its producer, keeping the node list topologically sorted
            ordered = []
            for node in model_copy.graph.node:
                ordered.append(node)
                ordered.extend(muls.get(node.name, []))
            del model_copy.graph.node[:]
            model_copy.graph.node.extend(ordered)
        drop_orphaned_identities(read_before, model_copy, aliases)
        return PassResult(model_copy, bool(applied), {"smoothed": applied, "skipped": skipped})


# Output columns the alpha search simulates per weight. Each column's error is its own sum (the
# scales are per input row), so every k-th column estimates the whole: a Llama-3.2-1B shape's
# packed gate|up has 16,384 columns and the search of 6 alphas took most of its quantize time
# (issue 28). SmolLM2's widest packed weight has 3,072, so its choices are unchanged.
SEARCH_COLUMNS = 4096


def _searched_columns(w: np.ndarray) -> np.ndarray:
    step = -(-w.shape[1] // SEARCH_COLUMNS)
    return w if step == 1 else np.ascontiguousarray(w[:, ::step])


def _rows_first(w: np.ndarray, transposed: bool) -> np.ndarray:
    return w.T if transposed else w


def _set(init: onnx.TensorProto, value: np.ndarray) -> None:
    dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
    init.CopyFrom(weight_store.tensor(value.astype(dtype), init.name))


def _own(model, node: onnx.NodeProto, index: int, inits: dict) -> onnx.TensorProto:
    """The initializer at `node.input[index]`, copied under a new name if any other input uses it
    or if it is an Identity of an initializer (`inits` maps such aliases to their source).

    Exporters share identical tensors (a fresh model's LayerNorm gammas are all ones), and
    rescaling one user must not rescale the others."""
    name = node.input[index]
    users = sum(i == name for n in model.graph.node for i in n.input)
    if users == 1 and inits[name].name == name:
        return inits[name]
    copy = onnx.TensorProto()
    copy.CopyFrom(inits[name])
    copy.name = f"{name}__{node.name}_{index}"
    model.graph.initializer.append(copy)
    inits[copy.name] = model.graph.initializer[-1]
    node.input[index] = copy.name
    return inits[copy.name]


def _apply(model, group: SmoothGroup, scales: np.ndarray, inits: dict, nodes: dict, muls: dict) -> None:
    producer = nodes[group.producer]
    if group.fold == "norm":
        for index in group.params:
            init = _own(model, producer, index, inits)
            _set(init, weight_store.array(init) / scales)
    elif group.fold == "gate":  # the up projection's columns
        init = _own(model, producer, 1, inits)
        _set(init, weight_store.array(init) / scales[None, :])
    elif group.fold == "attention-v":  # the last third of the packed QKV weight and bias
        weight, bias = _own(model, producer, 1, inits), _own(model, producer, 2, inits)
        w, b = weight_store.array(weight).copy(), weight_store.array(bias).copy()
        hidden = w.shape[1] // 3
        w[:, 2 * hidden :] /= scales
        b[2 * hidden :] /= scales
        _set(weight, w)
        _set(bias, b)
    for consumer, _, transposed in group.weights:
        init = _own(model, nodes[consumer], 1, inits)
        w = weight_store.array(init)
        _set(init, w * scales[None, :] if transposed else w * scales[:, None])
    if group.fold == "mul":  # the weights read X / s; every other reader keeps X
        inverse, smoothed = f"{group.tensor}_smooth_inverse", f"{group.tensor}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scales).astype(np.float32), inverse))
        mul = onnx.helper.make_node(
            "Mul", [group.tensor, inverse], [smoothed], name=f"{group.producer}_smooth"
        )
        for consumer, _, _ in group.weights:
            nodes[consumer].input[0] = smoothed
        muls.setdefault(group.producer, []).append(mul)
    elif group.others:
        restore = f"{group.tensor}_smooth_scale"
        restored = f"{group.tensor}_unsmoothed"
        model.graph.initializer.append(numpy_helper.from_array(scales.astype(np.float32), restore))
        mul = onnx.helper.make_node(
            "Mul", [group.tensor, restore], [restored], name=f"{group.producer}_unsmooth"
        )
        for node_name, index in group.others:
            nodes[node_name].input[index] = restored
        muls.setdefault(group.producer, []).append(mul)
