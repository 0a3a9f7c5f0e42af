"""Apply a pruning plan: slice the weights of kept units (fold) or zero the others (mask).

Folding makes the matrices physically smaller and rewrites, per layer, the Reshape constants that
carry the widths (head count, heads * head_dim, FFN width), so the model really gets faster.
Masking keeps every shape and zeroes what folding would remove; both compute the same function.
Every changed tensor gets a new initializer owned by its node, since exporters share equal tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxopt.passes.base import Pass, PassResult
from onnxopt.passes.graph_index import Graph, drop_unused_initializers
from onnxopt.passes.prune_structures import AttentionBlock, FfnBlock, Linear, ShapeConst


@dataclass
class FfnPlan:
    block: FfnBlock
    keep: np.ndarray  # sorted neuron indices
    down_weight: np.ndarray  # [len(keep), out]: re-fitted rows for the kept neurons
    down_bias: np.ndarray | None


@dataclass
class HeadPlan:
    block: AttentionBlock
    keep: list[int]  # head indices
    out_weight: np.ndarray  # [len(keep) * head_dim, out]
    out_bias: np.ndarray | None

    @property
    def channels(self) -> np.ndarray:
        return head_channels(self.keep, self.block.head_dim)


def head_channels(heads, head_dim: int) -> np.ndarray:
    """The hidden channels of the given heads (head h owns channels h*d .. h*d + d - 1)."""
    return np.concatenate([np.arange(h * head_dim, (h + 1) * head_dim) for h in heads]).astype(np.int64)


class FoldPruned(Pass):
    in_place = False  # slices a copy: the prune workflow folds the same model again per re-fit
    changes_input = False

    def __init__(self, ffn: list[FfnPlan], heads: list[HeadPlan], mask_only: bool = False):
        self.ffn, self.heads, self.mask_only = ffn, heads, mask_only
        self.name = "prune-mask" if mask_only else "prune-fold"

    def call(self, model: onnx.ModelProto) -> PassResult:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        g = Graph(out)
        for plan in self.ffn:
            b = plan.block
            _columns(g, b.up, plan.keep, b.width, self.mask_only)
            _rows(g, b.down, plan.keep, b.width, plan.down_weight, plan.down_bias, self.mask_only)
            if not self.mask_only:
                _shapes(g, b.shapes, len(plan.keep))
        for plan in self.heads:
            b, channels = plan.block, plan.channels
            width = b.heads * b.head_dim
            for proj in (b.q, b.k, b.v):
                # Masking zeroes V only: a head with zero values adds nothing, whatever it attends to.
                if not self.mask_only or proj is b.v:
                    _columns(g, proj, channels, width, self.mask_only)
            _rows(g, b.out, channels, width, plan.out_weight, plan.out_bias, self.mask_only)
            if not self.mask_only:
                _shapes(g, [s for s in b.shapes if s.value == b.heads], len(plan.keep))
                _shapes(g, [s for s in b.shapes if s.value == width], len(channels))
        drop_unused_initializers(out.graph)
        changed = bool(self.ffn or self.heads)
        return PassResult(out, changed, {"mask_only": self.mask_only})


def _set_input(g: Graph, node_name: str, old: str, value: np.ndarray, role: str) -> None:
    node = g.nodes[node_name]
    name = f"{node_name}/{role}_pruned"
    if value.dtype == np.float64:
        value = value.astype(np.float32)
    tensor = numpy_helper.from_array(value, name)
    if name in g.inits:
        g.inits[name].CopyFrom(tensor)
    else:
        g.model.graph.initializer.append(tensor)
        g.inits[name] = g.model.graph.initializer[-1]
    for i, x in enumerate(node.input):
        if x == old:
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


def _shapes(g: Graph, consts: list[ShapeConst], value: int) -> None:
    for const in consts:
        reshape = g.nodes[const.reshape]
        source = reshape.input[1]
        direct = g.const(source)
        if direct is not None:
            new = direct.copy()
            new.ravel()[const.index] = value
            _set_input(g, reshape.name, source, new, f"shape{const.index}")
            continue
        concat = g.producer[source]
        position = 0
        for piece in list(concat.input):
            v = g.const(piece)
            size = 1 if v is None else v.size
            if v is not None and position <= const.index < position + size:
                new = v.copy().reshape(-1)
                new[const.index - position] = value
                _set_input(g, concat.name, piece, new.reshape(v.shape).astype(v.dtype), f"piece{const.index}")
                break
            position += size
