"""Fuse each attention block of a Llama-family decoder exported with past into one
com.microsoft GroupQueryAttention node (rotary embedding, grouped K/V heads, cache concat).

Why: after int4 the weights are no longer what a decoded token waits for. Profiled on SmolLM2
(30 layers, 2 threads, 2026-12-01): of ~104 ms of node time per token, MatMulNBits took 43.5 ms;
the rest was ~3,000 small nodes of the exported attention (526 Unsqueeze, 458 Gather, 304 Concat,
Expand/Reshape for the K/V repeat, Slice/Neg/Concat for the rotation, the mask's Where and
IsNaN). GroupQueryAttention does all of it in one kernel per layer, reading the grouped heads
without repeating them.

Pattern: layer i's q/k/v projections (`/model/layers.{i}/self_attn/{q,k,v}_proj/`, a MatMul and a
bias Add for Qwen2), its o_proj MatMul, and the graph's `past_key_values.{i}.*` / `present.{i}.*`.
Check: every piece found, and head counts that divide the projection widths. Rewrite: one GQA
node from the projections to o_proj that writes the presents; the exported attention becomes dead
and is removed. Head counts are read from each layer's own weights, so a pruned model (fewer
heads per layer) fuses too.

GroupQueryAttention takes positions and the attended length from the attention mask's row sums
(`seqlens_k`): batches must be unpadded or right-padded, as onnxruntime-genai feeds it; a
left-padded batch would attend to its padding. onnxopt's own generation feeds unpadded prompts.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.passes.base import FunctionalPass, PassResult
from onnxopt.passes.graph_edits import drop_unused_initializers
from onnxopt.passes.rewrite import MS_DOMAIN, declare_ms_domain

SEQLENS, TOTAL, COS, SIN = "gqa_seqlens_k", "gqa_total_sequence_length", "gqa_cos_cache", "gqa_sin_cache"


class FuseDecoderAttention(FunctionalPass):
    """Functional. `rope`: the rotary tables (`.cos`, `.sin`: max positions x rotary dim / 2), or
    the reason the model has none. details: `fused` ({op: count}), `layers`, `skipped`
    ({layer or "graph": reason})."""

    name = "fuse-decoder-attention"

    def __init__(self, rope):
        self.rope = rope

    def apply(self, out: onnx.ModelProto, original: onnx.ModelProto) -> PassResult:
        graph = out.graph
        reason = self.rope if isinstance(self.rope, str) else _graph_reason(graph)
        if reason:
            return PassResult(out, False, {"skipped": {"graph": reason}})
        fused, skipped = [], {}
        layers = sorted(
            {int(i.name.split(".")[1]) for i in graph.input if i.name.startswith("past_key_values.")}
        )
        producers = {o: n for n in graph.node for o in n.output}
        for layer in layers:
            block = _find_block(graph, producers, layer)
            if isinstance(block, str):
                skipped[f"layer {layer}"] = block
                continue
            _rewrite(graph, layer, block)
            fused.append(layer)
        if fused:
            _add_shared_inputs(graph, self.rope.cos, self.rope.sin)
            _remove_dead_nodes(graph)
            drop_unused_initializers(graph)
            declare_ms_domain(out)
        details = {"fused": {"GroupQueryAttention": len(fused)} if fused else {}, "layers": fused}
        return PassResult(out, bool(fused), {**details, "skipped": skipped})


def _graph_reason(graph: onnx.GraphProto) -> str | None:
    inputs = {i.name for i in graph.input}
    if "attention_mask" not in inputs:
        return "no attention_mask input (GroupQueryAttention reads positions from it)"
    if not any(name.startswith("past_key_values.") for name in inputs):
        return "no past_key_values inputs: export with the cache (the default for decoders)"
    if any(n.op_type == "GroupQueryAttention" for n in graph.node):
        return "graph is already fused"
    return None


def _scope_output(graph, scope: str) -> str | None:
    """The one tensor that nodes of `scope` hand to nodes outside it (a projection's result)."""
    inside = [n for n in graph.node if n.name.startswith(scope)]
    names = {o for n in inside for o in n.output}
    read_outside = {i for n in graph.node if not n.name.startswith(scope) for i in n.input}
    leaving = [o for o in names if o in read_outside]
    return leaving[0] if len(leaving) == 1 else None


def _width(graph, producers, tensor: str) -> int | None:
    """Output width of a projection: its MatMul weight's last dim (through a bias Add)."""
    node = producers.get(tensor)
    inits = {t.name: t for t in graph.initializer}
    while node is not None and node.op_type == "Add":
        parents = [producers[i] for i in node.input if i in producers]  # a bias may be an Identity
        node = next((p for p in parents if p.op_type in ("MatMul", "Add")), None)
    if node is None or node.op_type != "MatMul" or node.input[1] not in inits:
        return None
    return int(inits[node.input[1]].dims[-1])


def _find_block(graph, producers, layer: int) -> dict | str:
    scope = f"/model/layers.{layer}/self_attn/"
    q, k, v = (_scope_output(graph, f"{scope}{p}_proj/") for p in "qkv")
    o_proj = next((n for n in graph.node if n.name == f"{scope}o_proj/MatMul"), None)
    if None in (q, k, v) or o_proj is None:
        return f"no q/k/v/o projections under {scope}"
    past = {i.name: i for i in graph.input}.get(f"past_key_values.{layer}.key")
    head_dim = past.type.tensor_type.shape.dim[3].dim_value if past is not None else 0
    widths = [_width(graph, producers, t) for t in (q, k, v)]
    if not head_dim or None in widths or any(w % head_dim for w in widths) or widths[1] != widths[2]:
        return f"projection widths {widths} are not whole heads of {head_dim}"
    if head_dim % 16:  # onnxruntime's CPU kernel refuses other sizes at run time
        return f"head size {head_dim} is not a multiple of 16 (GroupQueryAttention's CPU kernel)"
    heads, kv_heads = widths[0] // head_dim, widths[1] // head_dim
    if heads % kv_heads:
        return f"{heads} query heads do not group over {kv_heads} K/V heads"
    return {"q": q, "k": k, "v": v, "o_proj": o_proj, "heads": heads, "kv_heads": kv_heads}


def _rewrite(graph, layer: int, block: dict) -> None:
    present = (f"present.{layer}.key", f"present.{layer}.value")
    for node in graph.node:  # the exported attention's presents become dead tensors
        for names in (node.output, node.input):
            for j, name in enumerate(names):
                if name in present:
                    names[j] = f"{name}__unfused"
    attention = f"/model/layers.{layer}/self_attn/GroupQueryAttention_output_0"
    inputs = [block["q"], block["k"], block["v"], f"past_key_values.{layer}.key"]
    inputs += [f"past_key_values.{layer}.value", SEQLENS, TOTAL, COS, SIN]
    at = next(k for k, n in enumerate(graph.node) if n is block["o_proj"])  # stays topological
    graph.node.insert(
        at,
        helper.make_node(
            "GroupQueryAttention",
            inputs,
            [attention, *present],
            name=f"/model/layers.{layer}/self_attn/GroupQueryAttention",
            domain=MS_DOMAIN,
            num_heads=block["heads"],
            kv_num_heads=block["kv_heads"],
            do_rotary=1,
            rotary_interleaved=0,
        ),
    )
    graph.node[at + 1].input[0] = attention


def _add_shared_inputs(graph, cos: np.ndarray, sin: np.ndarray) -> None:
    """seqlens_k = sum(attention_mask) - 1 and the total length, as int32; the rotary tables."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(cos.astype(np.float32), COS),
            numpy_helper.from_array(sin.astype(np.float32), SIN),
            numpy_helper.from_array(np.array([1], np.int64), "gqa_axis_1"),
            numpy_helper.from_array(np.array(1, np.int64), "gqa_one"),
        ]
    )
    nodes = [
        helper.make_node("ReduceSum", ["attention_mask", "gqa_axis_1"], ["gqa_mask_sum"], keepdims=0),
        helper.make_node("Sub", ["gqa_mask_sum", "gqa_one"], ["gqa_last_index"]),
        helper.make_node("Cast", ["gqa_last_index"], [SEQLENS], to=onnx.TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["gqa_mask_shape"], start=1, end=2),
        helper.make_node("Squeeze", ["gqa_mask_shape"], ["gqa_mask_length"]),
        helper.make_node("Cast", ["gqa_mask_length"], [TOTAL], to=onnx.TensorProto.INT32),
    ]
    for index, node in enumerate(nodes):  # first in the graph, so the order stays topological
        node.name = f"/gqa_inputs/{node.op_type}_{index}"
        graph.node.insert(index, node)


def _remove_dead_nodes(graph) -> None:
    """Delete nodes nothing reads (graph outputs count as read), until none is left."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [k for k, n in enumerate(graph.node) if not any(o in read for o in n.output if o)]
        if not dead:
            return
        for k in reversed(dead):
            del graph.node[k]
