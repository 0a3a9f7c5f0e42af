"""Attention blocks traced from the scores Softmax back to their projections, for the layouts BERT's
finder does not take: decoders with a KV cache (GPT-2, Llama, Qwen2, Mistral, Phi-3), rotary
embeddings, grouped-query attention and packed QKV.

Each of the Q, K and V operands (of the scores and context MatMuls) is followed up through the ops
that carry head values (rotary Mul/Add/Slice/Neg/Concat, the cache Concat, repeat_kv's
Unsqueeze/Expand/Reshape, Transposes) to exactly one projection or packed section; side inputs
(rotary cos/sin, scaling) end at the first op that is none of these. A unit is a K/V head and the
query heads that read it (`heads // kv_heads`; one head without GQA): rotary embeddings act within
each head, so dropping whole groups keeps them valid, and repeat_kv's group size is unchanged.
Shape constants that carry a head count are recorded where their axis is known; one of unknown
meaning leaves the block whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.prune_structures.blocks import (
    AttentionBlock,
    ShapeConst,
    descendants,
    down_projection,
    linear_ending_at,
    scores_matmul,
    shape_elements,
)
from onnxopt.graph_queries.prune_structures.sections import Section, packed_section, scales, whole

_DATA = {"Mul", "Div", "Add", "Sub", "Neg", "Transpose", "Reshape", "Expand", "Unsqueeze", "Squeeze",
         "Concat", "Slice", "Cast", "Identity", "Dropout", "Where"}  # fmt: skip
_FIRST_ONLY = {
    "Transpose",
    "Reshape",
    "Expand",
    "Unsqueeze",
    "Squeeze",
    "Slice",
    "Cast",
    "Identity",
    "Dropout",
}


@dataclass
class _Trace:
    source: Section  # the projection (or packed section) an operand's heads come from
    nodes: list[onnx.NodeProto]  # the ops between them
    cache: list[str]  # graph inputs and outputs on the way: past_key_values.* and present.*


def traced_block(g: Graph, softmax: onnx.NodeProto, layer: int) -> AttentionBlock | str:
    """The attention block around `softmax`, or why it cannot be pruned."""
    scores = scores_matmul(g, softmax.input[0])
    through = {"Cast", "Dropout", "Where"}  # Where: exports that zero NaN rows of fully masked tokens
    context = next((c for c in descendants(g, softmax.output[0], through) if c.op_type == "MatMul"), None)
    if scores is None or context is None:
        return "scores or context MatMul not found"
    traces = [_trace(g, t) for t in (scores.input[0], scores.input[1], context.input[1])]
    bad = next((t for t in traces if isinstance(t, str)), None)
    if bad is not None:
        return bad
    q, k, v = traces
    d = _head_dim(g, q, k)
    if d is None:
        return "head size not found (no constant head reshape or cache shape)"
    widths = [t.source.stop - t.source.start for t in traces]
    if any(w % d for w in widths) or widths[1] != widths[2] or widths[0] % widths[1]:
        return f"Q/K/V widths {widths} do not split into heads of {d} with K and V alike"
    heads, groups = widths[0] // d, widths[1] // d
    problem = _packing_problem(g, traces, groups)
    if problem:
        return problem
    if heads != groups and not all(_repeats_kv(g, t, heads // groups) for t in (k, v)):
        return "query heads share K/V heads in a layout onnxopt does not know (no repeat_kv Expand)"
    found = _output_projection(g, context.output[0], heads * d)
    if found is None:
        return "no output projection of the context found"
    out_node, merge = found
    shapes = _head_consts(g, q, heads, heads, d) + _head_consts(g, k, groups, heads, d)
    shapes += _head_consts(g, v, groups, heads, d)
    if any(isinstance(s, str) for s in shapes):
        return next(s for s in shapes if isinstance(s, str))
    shapes += [c for t in traces for c in t.source.consts] + merge
    unique = [c for i, c in enumerate(shapes) if c not in shapes[:i]]
    if any(c.value % groups for c in unique):
        return "a shape constant on the way is not a whole number of head groups"
    cache = [n for t in (k, v) for n in t.cache if _cache_dim(g, n) == groups]
    return AttentionBlock(
        layer, q.source.linear, k.source.linear, v.source.linear, down_projection(g, out_node),
        heads, d, out_node.input[0], unique, groups if groups != heads else 0,
        (q.source.start, k.source.start, v.source.start), cache,
    )  # fmt: skip


def _trace(g: Graph, tensor: str) -> _Trace | str:
    """Up from a scores/context operand to the one projection (or packed section) it reads."""
    inputs = {i.name for i in g.model.graph.input}
    outputs = {o.name for o in g.model.graph.output}
    sources, nodes, cache, seen, frontier, stops = [], [], [], set(), [tensor], set()
    while frontier:
        t = frontier.pop()
        if t in seen or not t or g.const(t) is not None:
            continue
        seen.add(t)
        if t in outputs or t in inputs:
            cache.append(t)
        found = linear_ending_at(g, t)
        node = g.producer.get(t)
        section = (
            packed_section(g, node, t) if node is not None and node.op_type in ("Split", "Slice") else None
        )
        if found is not None or section is not None:
            sources.append(section or whole(found[0], found[1], t))
        elif node is not None and node.op_type in ("MatMul", "Gemm") and g.shared_weight(node.input[1]):
            return "Q/K/V weights are shared with another layer"
        elif node is not None and node.op_type in _DATA:
            nodes.append(node)
            data = node.input[:1] if node.op_type in _FIRST_ONLY else node.input
            frontier += data[1:] if node.op_type == "Where" else data
        elif node is not None:
            stops.add(node.op_type)  # side inputs (rotary cos/sin) end here, and unknown layouts
    if not sources:
        return f"Q, K or V not traced to a projection (the walk stopped at {', '.join(sorted(stops))})"
    if len(sources) > 1:
        return f"Q, K or V comes from {len(sources)} projections, not one"
    return _Trace(sources[0], nodes, cache)


def _head_reshape(trace: _Trace) -> onnx.NodeProto | None:
    return next(
        (n for n in trace.nodes if n.op_type == "Reshape" and n.input[0] == trace.source.output), None
    )


def _head_dim(g: Graph, q: _Trace, k: _Trace) -> int | None:
    """From the Reshape that splits Q into heads (batch, seq, heads, head_dim), else the cache."""
    reshape = _head_reshape(q)
    elements = shape_elements(g, reshape.input[1]) if reshape is not None else None
    if elements and len(elements) == 4:
        if elements[3] and elements[3] > 0:
            return elements[3]
        if elements[2] and elements[2] > 0:
            return (q.source.stop - q.source.start) // elements[2]
    inputs = {i.name: i for i in g.model.graph.input}
    dims = [inputs[n].type.tensor_type.shape.dim for n in k.cache if n in inputs]
    return next((d[3].dim_value for d in dims if len(d) == 4 and d[3].dim_value > 0), None)


def _packing_problem(g: Graph, traces: list[_Trace], groups: int) -> str | None:
    """Why the projections cannot be sliced head by head: an output read by more than its head
    Reshape, a packed one whose sections do not tile its output, or bounds the graph computes
    that would not follow the heads kept."""
    by_node: dict[str, list[Section]] = {}
    for t in traces:
        by_node.setdefault(t.source.linear.node, []).append(t.source)
        # The head Reshape is the section's one reader, so every path from it splits heads first.
        readers = [r.name for r in g.consumers.get(t.source.output, []) if r.op_type != "Shape"]
        head = _head_reshape(t)
        if head is None or readers != [head.name]:
            return "no head Reshape right after a projection, or its output is read elsewhere"
    for sections in by_node.values():
        spans = sorted((s.start, s.stop) for s in sections)
        if [a for a, _ in spans] != [0] + [b for _, b in spans[:-1]] or spans[-1][1] != sections[0].width:
            return "the sections of a packed QKV projection do not tile its output"
        if not all(scales(g, s, groups) for s in sections):
            return "packed QKV sections are computed in a way that would not follow the heads kept"
        cut = {g.producer[s.output].name for s in sections}
        readers = [r for s in sections if s.packed for r in g.consumers.get(s.packed, [])]
        if any(r.op_type != "Shape" and r.name not in cut for r in readers):
            return "a packed Q/K/V projection's output is read outside the attention"
    return None


def _repeats_kv(g: Graph, trace: _Trace, group_size: int) -> bool:
    """Whether K/V reach the scores through repeat_kv: Unsqueeze at axis 2, Expand to group_size
    along it, Reshape; query head h then reads K/V head h // group_size."""
    for node in trace.nodes:
        unsqueeze = g.producer.get(node.input[0]) if node.op_type == "Expand" else None
        if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.input) < 2:
            continue
        elements = _vector(g, node, 1)[2] or []
        axes = g.const(unsqueeze.input[1])
        if (
            axes is not None
            and axes.ravel().tolist() == [2]
            and len(elements) == 5
            and elements[2] == group_size
        ):
            return True
    return False


def _vector(g: Graph, node: onnx.NodeProto, index: int) -> tuple[str, int, list[int | None] | None]:
    """The shape vector input `index` of `node` reads, seen through the Where and flattening Reshape
    torch wraps an Expand target in (-1 entries become 1): the node and input that hold it, and its
    elements. ShapeConsts point there, so folding rewrites the vector itself."""
    holder, at = node, index
    for _ in range(4):
        producer = g.producer.get(holder.input[at])
        if producer is None or producer.op_type not in ("Where", "Reshape", "Cast", "Identity"):
            break
        holder, at = producer, 2 if producer.op_type == "Where" else 0
    return holder.name, at, shape_elements(g, holder.input[at])


def _head_consts(g: Graph, trace: _Trace, side: int, heads: int, d: int) -> list:
    """The head-count elements of the shapes on the way (each scales with the groups kept), or a
    note where a shape holds a head count at a place not understood. `side`: the heads this
    operand carries before repeat_kv (query heads for Q, K/V heads for K and V)."""
    found: list = []
    counts = {heads, side, heads * d, side * d} - {0, 1}
    for node in trace.nodes:
        if node.op_type not in ("Reshape", "Expand"):
            continue
        holder, at, elements = _vector(g, node, 1)
        elements = elements or []
        after_expand = getattr(g.producer.get(node.input[0]), "op_type", "") == "Expand"
        if node.op_type == "Reshape" and node.input[0] == trace.source.output and len(elements) == 4:
            axis, wanted = 2, side  # (batch, seq, heads, head_dim)
        elif node.op_type == "Expand" and len(elements) == 5:
            axis, wanted = 1, side  # repeat_kv: (batch, kv_heads, group, seq, head_dim)
        elif node.op_type == "Reshape" and after_expand and len(elements) == 4:
            axis, wanted = 1, heads  # repeat_kv merged: (batch, heads, seq, head_dim)
        elif any(e in counts for e in elements if e is not None):
            return [f"{node.name} carries a head count where onnxopt does not place it"]
        else:
            continue
        if elements[axis] == wanted:
            found.append(ShapeConst(holder, axis, wanted, at))
        elif elements[axis] is not None and elements[axis] not in (-1, 0):
            return [f"{node.name} reshapes to {elements[axis]} heads where {wanted} were expected"]
    return found


def _output_projection(g: Graph, tensor: str, width: int):
    """Down from the context MatMul through Transposes and Reshapes to the output projection (its
    weight has `width` rows), with the constants that carry `width` on the way."""
    consts = []
    for _ in range(8):
        users = [u for u in g.consumers.get(tensor, []) if u.op_type != "Shape"]
        if len(users) != 1:
            return None
        node = users[0]
        if (
            node.op_type in ("MatMul", "Gemm")
            and node.input[0] == tensor
            and g.weight_2d(node.input[1]) is not None
        ):
            return (node, consts) if g.inits[node.input[1]].dims[0] == width else None
        if node.op_type == "Reshape":
            elements = shape_elements(g, node.input[1]) or []
            consts += [ShapeConst(node.name, i, width) for i, e in enumerate(elements) if e == width]
        elif node.op_type != "Transpose":
            return None
        tensor = node.output[0]
    return None


def _cache_dim(g: Graph, name: str) -> int | None:
    """Dim 1 of a cache input or output (batch, kv_heads, length, head_dim), when it is fixed."""
    values = [v for v in [*g.model.graph.input, *g.model.graph.output] if v.name == name]
    dims = values[0].type.tensor_type.shape.dim if values else []
    return dims[1].dim_value if len(dims) == 4 and dims[1].dim_value > 0 else None
