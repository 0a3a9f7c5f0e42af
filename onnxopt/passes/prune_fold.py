"""Apply a pruning plan: slice the weights of kept units (fold) or zero the others (mask).

Folding makes the matrices physically smaller and rewrites, per layer, the shape constants that
carry the widths (head count, heads * head_dim, FFN width, the sizes and bounds that cut a packed
projection), so the model really gets faster; a decoder's cache inputs and outputs are told their
new K/V head count, layer by layer. Masking keeps every shape and zeroes what folding would
remove; both compute the same function. Every changed tensor gets a new initializer owned by its
node, since exporters share equal tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures import (
    AttentionBlock,
    FfnBlock,
    Linear,
    ShapeConst,
    head_channels,
    query_channels,
)
from onnxopt.io import weight_store
from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers


@dataclass
class FfnPlan:
    block: FfnBlock
    keep: np.ndarray  # sorted neuron indices
    down_weight: np.ndarray  # [len(keep), out]: re-fitted rows for the kept neurons
    down_bias: np.ndarray | None


@dataclass
class HeadPlan:
    block: AttentionBlock
    keep: list[int]  # unit indices: heads, or K/V head groups under grouped-query attention
    out_weight: np.ndarray  # [len(keep) * group_size * head_dim, out]
    out_bias: np.ndarray | None

    @property
    def channels(self) -> np.ndarray:
        return query_channels(self.block, self.keep)


class FoldPruned(FunctionalPass):
    # Functional (slices a copy): the prune workflow folds the same model again per re-fit.

    def __init__(self, ffn: list[FfnPlan], heads: list[HeadPlan], mask_only: bool = False):
        self.ffn, self.heads, self.mask_only = ffn, heads, mask_only
        self.name = "prune-mask" if mask_only else "prune-fold"

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        g = Graph(out)
        for plan in self.ffn:
            b = plan.block
            # A packed gate/up projection holds each neuron twice: columns j and F + j.
            columns = np.concatenate([offset + plan.keep for offset in b.up_offsets])
            _columns(g, b.up, columns, b.width * len(b.up_offsets), self.mask_only)
            if b.gate is not None:
                _columns(g, b.gate, plan.keep, b.width, self.mask_only)
            _rows(g, b.down, plan.keep, b.width, plan.down_weight, plan.down_bias, self.mask_only)
            if not self.mask_only:
                _shapes(g, b.shapes, len(plan.keep), b.width)
        for plan in self.heads:
            b = plan.block
            for proj, kept, width in _head_columns(g, b, plan.keep, self.mask_only):
                _columns(g, proj, kept, width, self.mask_only)
            width = b.heads * b.head_dim
            _rows(g, b.out, plan.channels, width, plan.out_weight, plan.out_bias, self.mask_only)
            if not self.mask_only:
                _shapes(g, b.shapes, len(plan.keep), b.groups)
                _cache_heads(g, b.cache, b.groups, len(plan.keep))
        drop_unused_initializers(out.graph)
        changed = bool(self.ffn or self.heads)
        return PassResult(out, changed, {"mask_only": self.mask_only})


def _head_columns(g: Graph, b: AttentionBlock, units, v_only: bool):
    """(projection, columns it keeps, its width) for each of Q, K, V's projections (one for packed
    QKV, whose sections tile its output). Masking zeroes V only: a head with zero values adds
    nothing, whatever it attends to."""
    d = b.head_dim
    sections = [
        (b.q, b.offsets[0], b.heads * d, query_channels(b, units)),
        (b.k, b.offsets[1], b.groups * d, head_channels(units, d)),
        (b.v, b.offsets[2], b.groups * d, head_channels(units, d)),
    ]
    dropped: dict[str, tuple[Linear, list[np.ndarray]]] = {}
    for proj, offset, size, kept in sections:
        entry = dropped.setdefault(proj.node, (proj, []))
        if not v_only or proj is b.v:
            entry[1].append(offset + np.setdiff1d(np.arange(size), kept))
    found = []
    for proj, gone in dropped.values():
        width = g.inits[proj.weight].dims[1]
        if gone:
            found.append((proj, np.setdiff1d(np.arange(width), np.concatenate(gone)).astype(np.int64), width))
    return found


def _cache_heads(g: Graph, names: list[str], heads: int, kept: int) -> None:
    """Past inputs and present outputs (batch, kv_heads, length, head_dim) of a layer whose K/V
    heads were cut: their declared dim 1 says the new count, so a cache is allocated to fit."""
    for value in [*g.model.graph.input, *g.model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name in names and len(dims) == 4 and dims[1].dim_value == heads:
            dims[1].dim_value = kept


def _set_input(
    g: Graph, node_name: str, old: str, value: np.ndarray, role: str, at: int | None = None
) -> None:
    """Point `node_name`'s input `old` (only input `at`, when given) at a new initializer `value`."""
    node = g.nodes[node_name]
    name = f"{node_name}/{role}_pruned"
    if value.dtype == np.float64:
        value = value.astype(np.float32)
    tensor = weight_store.tensor(value, name)
    if name in g.inits:
        g.inits[name].CopyFrom(tensor)
    else:
        g.model.graph.initializer.append(tensor)
        g.inits[name] = g.model.graph.initializer[-1]
    for i, x in enumerate(node.input):
        if x == old and at in (None, i):
            node.input[i] = name


def _columns(g: Graph, proj: Linear, keep: np.ndarray, width: int, mask: bool) -> None:
    w = g.const(_current(g, proj.node, proj.weight, "weight"))
    if mask:
        dropped = np.setdiff1d(np.arange(width), keep)
        w = w.copy()
        w[:, dropped] = 0
    else:
        w = w[:, keep]
    _set_input(g, proj.node, _current(g, proj.node, proj.weight, "weight"), w, "weight")
    if proj.bias is not None:
        holder = proj.bias_node or proj.node
        bias = g.const(_current(g, holder, proj.bias, "bias"))
        if mask:
            bias = bias.copy()
            bias[np.setdiff1d(np.arange(width), keep)] = 0
        else:
            bias = bias[keep]
        _set_input(g, holder, _current(g, holder, proj.bias, "bias"), bias, "bias")


def _rows(g: Graph, proj: Linear, keep, width: int, weight: np.ndarray, bias, mask: bool) -> None:
    if mask:
        full = np.zeros((width, weight.shape[1]), np.float32)
        full[keep] = weight
        weight = full
    _set_input(g, proj.node, _current(g, proj.node, proj.weight, "weight"), weight, "weight")
    if proj.bias is not None and bias is not None:
        holder = proj.bias_node or proj.node
        _set_input(g, holder, _current(g, holder, proj.bias, "bias"), bias, "bias")


def _current(g: Graph, node_name: str, original: str, role: str) -> str:
    """The input name now in `node_name` for what was `original` (it may have been replaced)."""
    replaced = f"{node_name}/{role}_pruned"
    return replaced if replaced in g.nodes[node_name].input else original


def _shapes(g: Graph, consts: list[ShapeConst], kept: int, units: int) -> None:
    """Rewrite each recorded shape element to its value with `kept` of `units` units: every one is
    proportional to the units (head count, heads * head_dim, F, a packed section's bound)."""
    for const in consts:
        value = const.value * kept // units
        reshape = g.nodes[const.reshape]
        source = reshape.input[const.input]
        role = f"shape{const.index}" if const.input == 1 else f"input{const.input}_{const.index}"
        direct = g.const(source)
        if direct is not None:
            new = direct.copy()
            new.ravel()[const.index] = value
            _set_input(g, reshape.name, source, new, role, const.input)
            continue
        concat = g.producer[source]
        position = 0
        for k, piece in enumerate(list(concat.input)):
            v = g.const(piece)
            size = 1 if v is None else v.size
            if v is not None and position <= const.index < position + size:
                new = v.copy().reshape(-1)
                new[const.index - position] = value
                piece_value = new.reshape(v.shape).astype(v.dtype)
                _set_input(g, concat.name, piece, piece_value, f"piece{const.index}", k)
                break
            position += size
