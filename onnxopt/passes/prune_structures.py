"""Find the prunable structures of an unfused transformer export, by graph shape, not by name.

FFN: an up projection (MatMul + bias Add, or Gemm with bias) of width F, an elementwise activation
(any GELU spelling, ReLU), and a down projection whose weight has F rows. Reshapes between them
whose target shape carries F (GPT-2's Conv1D export) are recorded so folding can rewrite them.

Attention (BERT, RoBERTa, DistilBERT, MiniLM): Q, K and V projections, each MatMul + bias Add ->
Reshape to (batch, seq, heads, head_dim); the scores Softmax; the context MatMul with V; the
merge Reshape to (batch, seq, heads * head_dim); and the output projection. The shape constants
that carry the head count are recorded per layer. Packed QKV (GPT-2's c_attn + Split) is reported
as not handled, so its heads stay and its FFN is still pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from onnxopt.passes.graph_index import Graph, attributes

_ELEMENTWISE = {
    "Mul",
    "Add",
    "Div",
    "Sub",
    "Erf",
    "Tanh",
    "Pow",
    "Sigmoid",
    "Relu",
    "Gelu",
    "FastGelu",
    "Identity",
    "Cast",
    "Sqrt",
}
_PASS_THROUGH = {"Mul", "Div", "Transpose", "Cast", "Identity", "Dropout"}


@dataclass
class Linear:
    """A projection: y = x @ weight + bias (weight rows are input channels)."""

    node: str
    weight: str
    bias: str | None
    bias_node: str | None = None  # the Add carrying the bias, for MatMul + Add


@dataclass
class ShapeConst:
    """One element of a Reshape target shape that must change when width changes."""

    reshape: str
    index: int  # position in the shape vector
    value: int


@dataclass
class FfnBlock:
    layer: int
    up: Linear
    down: Linear
    width: int
    hidden_input: str  # the down projection's input tensor (activations, F channels)
    shapes: list[ShapeConst] = field(default_factory=list)


@dataclass
class AttentionBlock:
    layer: int
    q: Linear
    k: Linear
    v: Linear
    out: Linear
    heads: int
    head_dim: int
    context: str  # the output projection's input tensor (heads * head_dim channels)
    shapes: list[ShapeConst] = field(default_factory=list)


def _linear_ending_at(g: Graph, tensor: str) -> tuple[Linear, int] | None:
    """The projection producing `tensor` (MatMul [+ bias Add] or Gemm), and its output width."""
    node = g.producer.get(tensor)
    if node is None:
        return None
    if node.op_type == "Add":
        for bias, other in (node.input, reversed(node.input)):
            inner = g.producer.get(other)
            if inner is None or inner.op_type != "MatMul" or g.weight_2d(inner.input[1]) is None:
                continue
            width = g.inits[inner.input[1]].dims[1]
            if g.is_vector(bias, width) and len(g.consumers.get(other, [])) == 1:
                return Linear(inner.name, inner.input[1], bias, node.name), width
        return None
    if node.op_type == "MatMul" and g.weight_2d(node.input[1]) is not None:
        return Linear(node.name, node.input[1], None), g.inits[node.input[1]].dims[1]
    if node.op_type == "Gemm" and g.weight_2d(node.input[1]) is not None:
        attrs = attributes(node)
        if attrs.get("transA", 0) or attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0:
            return None
        width = g.inits[node.input[1]].dims[1]
        bias = node.input[2] if len(node.input) > 2 and g.is_vector(node.input[2], width) else None
        if len(node.input) > 2 and node.input[2] and bias is None:
            return None  # a broadcast bias of another shape: leave it alone
        return Linear(node.name, node.input[1], bias), width
    return None


def _reshape_consts(g: Graph, reshape: onnx.NodeProto, wanted: int) -> list[ShapeConst] | None:
    """Positions in a Reshape's target shape equal to `wanted`, when that shape is built of constants
    (a constant vector, or a Concat of constant and computed pieces)."""
    shape = reshape.input[1]
    value = g.const(shape)
    if value is not None:
        return [ShapeConst(reshape.name, i, wanted) for i, v in enumerate(value.tolist()) if v == wanted]
    concat = g.producer.get(shape)
    if concat is None or concat.op_type != "Concat":
        return None
    found, position = [], 0
    for piece in concat.input:
        v = g.const(piece)
        if v is None:
            position += 1  # computed pieces here are single dims (batch, seq)
            continue
        found += [
            ShapeConst(reshape.name, position + i, wanted)
            for i, x in enumerate(v.ravel().tolist())
            if x == wanted
        ]
        position += v.size
    return found


def find_ffn_blocks(g: Graph) -> list[FfnBlock]:
    blocks = []
    for node in g.model.graph.node:
        if (
            node.op_type not in ("MatMul", "Gemm")
            or len(node.input) < 2
            or g.weight_2d(node.input[1]) is None
        ):
            continue
        width = g.inits[node.input[1]].dims[0]
        start = node.input[0]
        region, shapes, frontier, up = set(), [], [start], None
        ok = True
        while frontier and ok:
            tensor = frontier.pop()
            found = _linear_ending_at(g, tensor)
            if found is not None and found[1] == width and tensor != start:
                up = up or found[0]
                ok = up.node == found[0].node
                continue
            producer = g.producer.get(tensor)
            if producer is None or producer.name in region:
                ok = producer is not None
                continue
            region.add(producer.name)
            if producer.op_type == "Reshape":
                consts = _reshape_consts(g, producer, width)
                if consts is None:
                    ok = False
                    continue
                shapes += consts
                frontier.append(producer.input[0])
            elif producer.op_type in _ELEMENTWISE:
                for i in producer.input:
                    c = g.const(i)
                    if c is None:
                        frontier.append(i)
                    elif c.size != 1:
                        ok = False
            else:
                ok = False
        if ok and up is not None:
            blocks.append(FfnBlock(len(blocks), up, _down(g, node), width, start, shapes))
    return blocks


def _down(g: Graph, node: onnx.NodeProto) -> Linear:
    if node.op_type == "Gemm":
        return Linear(node.name, node.input[1], node.input[2] if len(node.input) > 2 else None)
    add = next((c for c in g.consumers.get(node.output[0], []) if c.op_type == "Add"), None)
    width = g.inits[node.input[1]].dims[1]
    bias = None
    if add is not None:
        bias = next((i for i in add.input if g.is_vector(i, width)), None)
    return Linear(node.name, node.input[1], bias, add.name if bias else None)


def _through(g: Graph, tensor: str, ops: set[str]) -> str:
    """Walk up from `tensor` while producers are in `ops` (following their first non-constant input)."""
    node = g.producer.get(tensor)
    while node is not None and node.op_type in ops:
        tensor = next(i for i in node.input if g.const(i) is None)
        node = g.producer.get(tensor)
    return tensor


def _head_projection(g: Graph, tensor: str) -> tuple[Linear, onnx.NodeProto] | None:
    """From a scores/context MatMul operand up to Reshape(heads) <- projection."""
    tensor = _through(g, tensor, _PASS_THROUGH)
    reshape = g.producer.get(tensor)
    if reshape is None or reshape.op_type != "Reshape":
        return None
    found = _linear_ending_at(g, reshape.input[0])
    return (found[0], reshape) if found else None


def find_attention_blocks(g: Graph) -> tuple[list[AttentionBlock], list[str]]:
    blocks, notes = [], []
    for softmax in [n for n in g.model.graph.node if n.op_type == "Softmax"]:
        scores = _scores_matmul(g, softmax.input[0])
        context_mm = next(
            (c for c in _descendants(g, softmax.output[0], {"Cast", "Dropout"}) if c.op_type == "MatMul"),
            None,
        )
        if scores is None or context_mm is None:
            notes.append(f"{softmax.name}: scores or context MatMul not found")
            continue
        q = _head_projection(g, scores.input[0])
        k = _head_projection(g, scores.input[1])
        v = _head_projection(g, context_mm.input[1])
        if not (q and k and v):
            operands = (scores.input[0], scores.input[1], context_mm.input[1])
            if any(_shared_projection(g, t) for t in operands):
                notes.append(f"{softmax.name}: Q/K/V weights are shared with another layer")
            else:
                notes.append(f"{softmax.name}: Q/K/V are not separate projections (packed QKV)")
            continue
        merged = _merged_context(g, context_mm.output[0])
        reshape = g.producer.get(merged) if merged else None
        out_node = next(
            (c for c in g.consumers.get(merged or "", []) if c.op_type in ("MatMul", "Gemm")), None
        )
        if reshape is None or reshape.op_type != "Reshape" or out_node is None:
            notes.append(f"{softmax.name}: no merge Reshape and output projection after the context")
            continue
        width = g.inits[q[0].weight].dims[1]
        heads = _heads_from(g, q[1], width)
        per_projection = [_reshape_consts(g, r, heads) for r in (q[1], k[1], v[1])] if heads else []
        if not per_projection or not all(per_projection):
            notes.append(f"{softmax.name}: head count not found in a constant reshape shape")
            continue
        head_dim = width // heads
        shapes = [c for consts in per_projection for c in consts]
        merge = _reshape_consts(g, reshape, width)
        if not merge:
            notes.append(f"{softmax.name}: merge Reshape width not constant")
            continue
        shapes += merge
        out = _down(g, out_node)
        blocks.append(
            AttentionBlock(len(blocks), q[0], k[0], v[0], out, heads, head_dim, out_node.input[0], shapes)
        )
    return blocks, [f"{note}; its heads are kept" for note in notes]


def _shared_projection(g: Graph, tensor: str) -> bool:
    """Whether the projection behind a scores/context operand reads a weight shared between layers."""
    reshape = g.producer.get(_through(g, tensor, _PASS_THROUGH))
    node = g.producer.get(reshape.input[0]) if reshape is not None and reshape.input else None
    if node is not None and node.op_type == "Add":  # the bias Add: its MatMul is one input's producer
        node = next((p for i in node.input if (p := g.producer.get(i)) and p.op_type == "MatMul"), None)
    return node is not None and node.op_type in ("MatMul", "Gemm") and g.shared_weight(node.input[1])


def _scores_matmul(g: Graph, tensor: str) -> onnx.NodeProto | None:
    """Up from the Softmax input through scaling and masking to the Q.K MatMul."""
    node = g.producer.get(tensor)
    for _ in range(8):
        if node is None or node.op_type == "MatMul":
            return node
        if node.op_type not in {"Add", "Mul", "Div", "Sub", "Cast", "Where"}:
            return None
        operands = [g.producer[i] for i in node.input if g.const(i) is None and i in g.producer]
        node = next((p for p in operands if p.op_type == "MatMul"), operands[0] if operands else None)
    return None


def _heads_from(g: Graph, reshape: onnx.NodeProto, width: int) -> int | None:
    value = g.const(reshape.input[1])
    pieces = [value] if value is not None else [g.const(i) for i in g.producer[reshape.input[1]].input]
    numbers = [int(x) for p in pieces if p is not None for x in p.ravel().tolist() if x > 1]
    for heads in numbers:
        if width % heads == 0 and (width // heads) in numbers:
            return heads
    return None


def _descendants(g: Graph, tensor: str, through: set[str]) -> list[onnx.NodeProto]:
    out, frontier = [], [tensor]
    while frontier:
        for c in g.consumers.get(frontier.pop(), []):
            out.append(c)
            if c.op_type in through:
                frontier.append(c.output[0])
    return out


def _merged_context(g: Graph, tensor: str) -> str | None:
    """Down from the context MatMul through single Transposes to the merge Reshape's output."""
    while len(users := g.consumers.get(tensor, [])) == 1:
        node = users[0]
        if node.op_type == "Reshape":
            return node.output[0]
        if node.op_type != "Transpose":
            return None
        tensor = node.output[0]
    return None
