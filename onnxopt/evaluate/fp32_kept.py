"""`inspect` on a quantized model: which parameters stayed fp32, grouped by why.

Read from the graph (who consumes each float initializer) and the manifest (nodes the user or the
accuracy search kept fp32), so a user whose model shrank less than expected sees at once whether a
linear layer was missed or only norms and biases remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.passes.quantize_embeddings import ROW_SCALE_SUFFIX
from onnxopt.passes.quantize_weights_offset import INDICATOR_PREFIX

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
LINEAR_OPS = ("MatMul", "Gemm", "Conv")
NORM_OPS = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "EmbedLayerNormalization",
    "QEmbedLayerNormalization",
    "RMSNormalization",
)
QUANT_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "MatMulNBits",
)

# Why each group stays fp32, as inspect prints it.
WHY = {
    "linear weights, excluded": "kept fp32 by --exclude or the --max-drop search",
    "linear weights, not quantized": "a MatMul/Gemm the quantizer did not reach (see --ops)",
    "embedding tables": "Gather tables under 64 rows, or --no-embeddings",
    "norm weights": "normalization scales and shifts: few, and accuracy-critical",
    "biases and other small tensors": "added after the int8 product, in fp32 by design",
    "quantization scales": "the int8 layers' own scales",
    "block-sum indicators": "int4 offsets' 0/1 matrices summing each block of inputs, one per width",
}


@dataclass
class Fp32Group:
    kind: str
    parameters: int
    tensors: int
    why: str
    examples: list[str] = field(default_factory=list)  # node names, for linear weights


def parameter_count(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims)) if t.dims else 1


def _kind(name: str, consumers: list[onnx.NodeProto], excluded: set[str]) -> tuple[str, str | None]:
    """The group of a float initializer, and the node it names (linear weights only)."""
    ops = {n.op_type for n in consumers}
    if ops & set(QUANT_OPS) or name.endswith(ROW_SCALE_SUFFIX):
        return "quantization scales", None
    if name.startswith(INDICATOR_PREFIX):
        return "block-sum indicators", None
    for node in consumers:
        if node.op_type in LINEAR_OPS and node.input[1:2] == [name]:
            kind = "excluded" if node.name in excluded else "not quantized"
            return f"linear weights, {kind}", node.name or node.op_type
    if any(n.op_type == "Gather" and n.input[0] == name for n in consumers) or any(
        "EmbedLayerNormalization" in n.op_type and name in n.input[2:5] for n in consumers
    ):
        return "embedding tables", None
    if ops & set(NORM_OPS):
        return "norm weights", None
    return "biases and other small tensors", None


def excluded_nodes(steps: list[dict]) -> set[str]:
    """Nodes a quantize step kept fp32 on purpose: --exclude, and the --max-drop fallback."""
    names: set[str] = set()
    for step in steps:
        names.update(step.get("exclude") or [])
        names.update(k.get("node", "") for k in (step.get("fallback") or {}).get("kept_fp32", []))
    names.discard("")
    return names


def fp32_kept(model: onnx.ModelProto, steps: list[dict]) -> list[Fp32Group]:
    """Float initializers of a quantized model grouped by why they stayed fp32, largest first."""
    consumers = Graph(model).consumers
    excluded = excluded_nodes(steps)
    groups: dict[str, Fp32Group] = {}
    for t in model.graph.initializer:
        if t.data_type not in FLOAT_TYPES or t.name not in consumers:
            continue
        kind, node = _kind(t.name, consumers[t.name], excluded)
        group = groups.setdefault(kind, Fp32Group(kind, 0, 0, WHY[kind]))
        group.parameters += parameter_count(t)
        group.tensors += 1
        if node is not None and len(group.examples) < 3:
            group.examples.append(node)
    return sorted(groups.values(), key=lambda g: -g.parameters)
