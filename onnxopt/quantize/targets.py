"""What `quantize --target` changes: the int8 layout follows the runtime that will run it.

- cpu: onnxruntime's fused graph and its int8 kernels (QAttention, DynamicQuantizeMatMul, ...),
  or QDQ on that fused graph with --qdq. Only onnxruntime reads either: both carry
  com.microsoft ops.
- openvino: QDQ on plain ONNX ops (no onnxruntime fusions: OpenVINO 2026.4 has no conversion
  rule for QAttention or QEmbedLayerNormalization), static scales throughout (OpenVINO folds a
  QuantizeLinear/DequantizeLinear pair into an int8 layer; a dynamic one is not such a pair: the
  six FFN down projections with dynamic scales ran as f32 FullyConnected layers, MiniLM batch 32
  1.46x -> 0.72x fp32 on OpenVINO), no QDQ pair on a MatMul's own output (onnxruntime's default
  puts one before the bias Add), a quantized tensor's fp32 readers (the residual branch, Shape,
  the un-smoothing Mul) reading the tensor itself, not its DQ (passes/qdq_fp32_readers: STS-B dev
  on OpenVINO 86.62 -> 86.70, same speed, Intel Xeon AVX512-VNNI, 2026-12-02), and attention
  probabilities x V and the scores Q x K^T left fp32 (attention_scores), and signed int8
  activations (activation_layout). Measured on MiniLM, OpenVINO 2026.4, 2 threads, interleaved,
  Intel Xeon AMX, 2026-12-02, batch 1 / 32 ms, STS-B dev / train drop on OpenVINO:
  uint8, QK^T int8 5.79 / 111.6, 0.01 / 0.04; int8, QK^T int8 6.02 / 117.0, 0.00 / 0.03 (its
  zero points dequantized by 13 Convert + 11 Subtract layers); int8 with Q and K symmetric (NNCF's
  choice: one int8 attention subgraph) 5.32 / 109.6 but 0.12 / 0.44; int8, QK^T fp32 5.19 / 108.7,
  -0.01 / 0.06; NNCF 5.53 / 107.1. Symmetric everywhere lost 0.36 dev (GELU and LayerNorm
  outputs are lopsided).
- portable: QDQ on plain ONNX ops, every MatMul quantized, for runtimes onnxopt does not measure.
- auto: cpu and openvino both built and timed here, the faster kept (target_choice).
"""

from __future__ import annotations

import onnx

from onnxopt.graph_queries.graph_index import Graph

# Why a plain ONNX target's layout differs from the user's options (the module docstring measures it).
PLAIN_ONNX = {
    "openvino": "QDQ on plain ONNX ops for OpenVINO: no onnxruntime fusions (no conversion rule for "
    "QAttention or QEmbedLayerNormalization in OpenVINO 2026.4), static scales throughout, QDQ-able "
    "ops only, attention core fp32",
    "portable": "QDQ on plain ONNX ops, every MatMul quantized: no onnxruntime fusions, static scales "
    "throughout, QDQ-able ops only",
}


def attention_core(model: onnx.ModelProto) -> tuple[str, ...]:
    """MatMuls that read attention probabilities: a Softmax output, directly or through a Cast,
    Dropout or Identity."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def from_softmax(name: str) -> bool:
        node = producer.get(name)
        for _ in range(3):
            if node is None:
                return False
            if node.op_type == "Softmax":
                return True
            if node.op_type not in ("Cast", "Dropout", "Identity"):
                return False
            node = producer.get(node.input[0])
        return False

    return tuple(
        n.name for n in model.graph.node if n.op_type == "MatMul" and n.name and from_softmax(n.input[0])
    )


def attention_scores(model: onnx.ModelProto) -> tuple[str, ...]:
    """MatMuls that compute attention scores (Q x K^T): two activations in, the product reaching a
    Softmax through the mask and scale ops."""
    graph = Graph(model)

    def to_softmax(name: str, hops: int = 4) -> bool:
        for node in graph.consumers.get(name, []):
            if node.op_type == "Softmax":
                return True
            if (
                hops
                and node.op_type in ("Add", "Div", "Mul", "Where", "Cast")
                and to_softmax(node.output[0], hops - 1)
            ):
                return True
        return False

    return tuple(
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n.name
        and not graph.inits.keys() & set(n.input)
        and to_softmax(n.output[0])
    )
