"""The ops whose output smoothing can divide at no cost: normalizations (1/s folds into their
per-channel scale) and fused Attention (into its V columns).

A normalization ends in a per-channel scale: Y = Z * gamma (+ beta), so Y / s is the same op with
gamma / s (and beta / s). The fused forms carry gamma as an input (FUSED_NORMS). RMSNorm (Llama,
Qwen2, Mistral) is exported unfused as x * 1/sqrt(mean(x^2) + eps) * gamma:

    Pow(x, 2) or Mul(x, x) -> ReduceMean -> Add eps -> Sqrt -> Div(1, .) or Reciprocal
    -> Mul(x, .) [-> Cast] -> Mul(gamma, .)      (or Div(x, Sqrt(.)) in place of the middle Mul)

`rms_gammas` finds the final Mul of that chain by its shape. Folding into it is exact whatever
computed Z; the pattern is there to pick normalization outputs (where outlier channels live),
not arbitrary Muls. Exporters share equal tensors between layers through Identity nodes (a fresh
model's gammas are all ones), so a gamma may be the Identity of an initializer (`constant_aliases`).
"""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.graph_index import Graph

# Producer op -> (indices of its gamma and beta inputs). Only output 0 is the normalized tensor.
FUSED_NORMS = {
    "LayerNormalization": (1, 2),
    "SkipLayerNormalization": (2, 3),
    "EmbedLayerNormalization": (5, 6),
    "SimplifiedLayerNormalization": (1,),  # RMSNorm: onnxruntime's fused form, gamma only
    "SkipSimplifiedLayerNormalization": (2,),  # its input 3 is a bias added before normalizing
    "RMSNormalization": (1,),  # ONNX opset 23
}
RMS_NORMS = frozenset(op for op, params in FUSED_NORMS.items() if len(params) == 1)  # no beta


def gated_products(model: onnx.ModelProto) -> dict[str, str]:
    """SwiGLU-style products act(gate) * up where `up` is a MatMul by a constant matrix, no bias:
    {product: the up MatMul's name}. Dividing the product's channel j by s is exact as up's
    column j / s, as long as the other factor does not read up's output (SiLU's own x * sigmoid(x)
    does read it, and is left out)."""
    graph = Graph(model)
    found = {}
    for node in model.graph.node:
        if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        ups = [
            (k, graph.producer[x]) for k, x in enumerate(node.input)
            if x in graph.producer and graph.producer[x].op_type == "MatMul"
            and graph.weight_2d(graph.producer[x].input[1]) is not None and graph.producer[x].name
        ]  # fmt: skip
        if len(ups) != 1:
            continue
        index, up = ups[0]
        other = graph.producer.get(node.input[1 - index])
        if other is not None and up.output[0] not in _ancestors(graph, other, depth=4):
            found[node.output[0]] = up.name
    return found


def _ancestors(graph: Graph, node: onnx.NodeProto, depth: int) -> set[str]:
    seen, frontier = set(), [node]
    for _ in range(depth):
        inputs = [i for n in frontier for i in n.input]
        seen.update(inputs)
        frontier = [graph.producer[i] for i in inputs if i in graph.producer]
    return seen


def smoothable(node: onnx.NodeProto, rms: dict[str, int], aliases: dict[str, str], gates=None):
    """(fold, the producer's inputs divided by s, the initializers they must be) when `node`
    produces a smoothable activation at output 0; a reason when it cannot be one; else None.
    RMSNorm gammas may be Identity copies of an initializer (`aliases`); LayerNorm ones are taken
    only as initializers, as before RMSNorm was recognised, so encoder groups stay as they were."""
    if node.op_type in FUSED_NORMS:
        params = tuple(i for i in FUSED_NORMS[node.op_type] if i < len(node.input) and node.input[i])
        owned = [node.input[i] for i in params]
        if node.op_type in RMS_NORMS:
            owned = [aliases.get(name, name) for name in owned]
        return "norm", params, owned
    if node.output and node.output[0] in rms:
        index = rms[node.output[0]]
        return "norm", (index,), [aliases.get(node.input[index], node.input[index])]
    if node.op_type == "Attention" and node.domain == "com.microsoft" and len(node.input) > 2:
        if "qkv_hidden_sizes" in {a.name for a in node.attribute}:
            return "Attention with qkv_hidden_sizes"
        return "attention-v", (1, 2), [node.input[1], node.input[2]]
    if gates and node.output and node.output[0] in gates:
        return "gate", (), []
    return None


def constant_aliases(model: onnx.ModelProto) -> dict[str, str]:
    """{Identity output: the initializer it copies}, through chains of Identity nodes."""
    inits = {t.name for t in model.graph.initializer}
    source = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.input}
    aliases = {}
    for name in source:
        origin, seen = name, set()
        while origin in source and origin not in seen:
            seen.add(origin)
            origin = source[origin]
        if origin in inits:
            aliases[name] = origin
    return aliases


def rms_gammas(model: onnx.ModelProto) -> dict[str, int]:
    """Unfused RMSNorms: {output of the final Mul: index of its gamma input}, gamma a constant
    vector (an initializer, or an Identity of one)."""
    graph = Graph(model)
    aliases = constant_aliases(model)
    found = {}
    for node in model.graph.node:
        if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        for index in (0, 1):
            gamma = aliases.get(node.input[index], node.input[index])
            if (
                gamma in graph.inits
                and len(graph.inits[gamma].dims) == 1
                and _normalized(graph, node.input[1 - index])
            ):
                found[node.output[0]] = index
                break
    return found


def _through_casts(graph: Graph, name: str) -> str:
    """The tensor `name` was cast from, through any chain of Cast nodes."""
    node = graph.producer.get(name)
    while node is not None and node.op_type == "Cast":
        name = node.input[0]
        node = graph.producer.get(name)
    return name


def _op(graph: Graph, name: str, op_type: str):
    node = graph.producer.get(name)
    return node if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") else None


def _is_const(graph: Graph, name: str, value: float) -> bool:
    found = graph.const(name)
    return found is not None and found.size == 1 and float(found.reshape(-1)[0]) == value


def _normalized(graph: Graph, name: str) -> bool:
    """Whether `name` is x / rms(x): Mul(x, 1/rms), Mul(1/rms, x) or Div(x, rms), maybe cast."""
    name = _through_casts(graph, name)
    div = _op(graph, name, "Div")
    if div is not None:
        return _root_mean_square(graph, div.input[1], div.input[0])
    mul = _op(graph, name, "Mul")
    if mul is None:
        return False
    return any(_inverse_rms(graph, mul.input[1 - i], mul.input[i]) for i in (0, 1))


def _inverse_rms(graph: Graph, name: str, x: str) -> bool:
    """Whether `name` is 1 / rms(x): Reciprocal(rms) or Div(1, rms)."""
    reciprocal = _op(graph, name, "Reciprocal")
    if reciprocal is not None:
        return _root_mean_square(graph, reciprocal.input[0], x)
    div = _op(graph, name, "Div")
    if div is None or not _is_const(graph, div.input[0], 1.0):
        return False
    return _root_mean_square(graph, div.input[1], x)


def _root_mean_square(graph: Graph, name: str, x: str) -> bool:
    """Whether `name` is Sqrt(ReduceMean(x^2) + eps)."""
    sqrt = _op(graph, name, "Sqrt")
    add = sqrt and _op(graph, sqrt.input[0], "Add")
    if add is None:
        return False
    for i in (0, 1):
        mean = _op(graph, add.input[i], "ReduceMean")
        square = mean and (_op(graph, mean.input[0], "Pow") or _op(graph, mean.input[0], "Mul"))
        if square is None or graph.const(add.input[1 - i]) is None:
            continue
        base = _through_casts(graph, square.input[0])
        if _through_casts(graph, x) != base:
            continue
        if square.op_type == "Pow" and _is_const(graph, square.input[1], 2.0):
            return True
        if square.op_type == "Mul" and _through_casts(graph, square.input[1]) == base:
            return True
    return False
