"""What a prune run reports, read back from the written model: per block, the projections'
weights before and after (every linear weight is one multiply-add per token), and the whole
model's parameters. Read from the file, not from the plan: a structure the fold could not apply
shows here, instead of a claimed -50% (ALBERT's shared layers once grew the model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures import block_linears
from onnxopt.passes.prune_fold import HeadPlan


@dataclass
class LayerReport:
    kind: str  # "attention" or "ffn"
    layer: int
    units: int
    kept: int
    params_before: int
    params_after: int


def linear_params(g: Graph, block, nonzero: bool) -> int:
    """Weights of a block's projections as the graph `g` has them (by node name: folding keeps
    names and swaps inputs); with `nonzero`, only the non-zero ones (--mask-only keeps shapes).
    A packed projection (GPT-2's c_attn, Phi-3's qkv_proj) counts once."""
    total = 0
    for linear in block_linears(block):
        weight = g.nodes[linear.node].input[1]
        if nonzero:
            total += int(np.count_nonzero(g.const(weight)))
        else:
            total += int(np.prod(g.inits[weight].dims))
    return total


def measured(before: Graph, after: Graph, head_plans, ffn_plans, mask_only: bool) -> list[LayerReport]:
    layers = [
        LayerReport(
            "attention" if isinstance(p, HeadPlan) else "ffn",
            p.block.layer,
            p.block.heads if isinstance(p, HeadPlan) else p.block.width,
            len(p.keep) * p.block.group_size if isinstance(p, HeadPlan) else len(p.keep),
            linear_params(before, p.block, False),
            linear_params(after, p.block, mask_only),
        )
        for p in [*head_plans, *ffn_plans]
    ]
    return sorted(layers, key=lambda r: (r.layer, r.kind))


def parameters(model) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def cache_widths(written: Graph, head_plans) -> list[dict]:
    """Per layer, the K/V heads of a decoder's cache (or of grouped-query attention) before and
    kept, and dim 1 of its past_key_values.* / present.* as the written graph declares it:
    config.json has one num_key_value_heads for every layer, so the per-layer widths live here."""
    declared = {
        v.name: v.type.tensor_type.shape.dim[1].dim_value
        for v in [*written.model.graph.input, *written.model.graph.output]
        if len(v.type.tensor_type.shape.dim) == 4
    }
    return [
        {
            "layer": p.block.layer,
            "kv_heads": p.block.groups,
            "kv_kept": len(p.keep),
            "cache": {name: declared.get(name) for name in p.block.cache},
        }
        for p in head_plans
        if p.block.kv_heads or p.block.cache
    ]


def cache_notes(head_plans, mask_only: bool) -> list[str]:
    """What a decoder whose K/V heads were cut needs from whatever runs it: the cache is per layer."""
    cut = [p for p in head_plans if p.block.cache and len(p.keep) < p.block.groups]
    if mask_only or not cut:
        return []
    widths = ", ".join(str(len(p.keep)) for p in head_plans if p.block.cache)
    return [
        f"K/V heads kept per layer: {widths} of {cut[0].block.groups}; the cache shape is per layer "
        "in the graph (dim 1 of past_key_values.* and present.*). config.json is left as it was, "
        "since one head count for every layer cannot say this; optimum's ORTModelForCausalLM, "
        "which sizes the first empty cache from config.json, cannot run the model, while "
        "onnxopt's Decoder (runtime.generation) reads the cache shapes from the graph"
    ]
