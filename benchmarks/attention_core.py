"""Issue 17, item 4: does another form of the attention core pay on onnxruntime's CPU provider?

MiniLM's shapes (batch 32, 12 heads of 32, seq 128), fp32, 2 threads, candidates interleaved:
1. the core alone: MatMul-Softmax-MatMul (the unfused export) against ai.onnx Attention-23 and
   com.microsoft MultiHeadAttention;
2. the block as the int8 layout runs it (packed QKV projection + core, with a padding mask):
   com.microsoft Attention (QAttention's core is the same code) against MatMul + Split +
   Attention-23 (3D inputs, q/kv_num_heads), the form an opset-23 export would take.
Prints p50 per layer. `python benchmarks/attention_core.py`
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

B, H, S, D = 32, 12, 128, 32
E = H * D
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), ms=False):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", 23)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)  # onnxruntime 1.31 reads IR <= 13


def _session(model, threads=2):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def core_candidates(rng):
    q4 = {k: rng.standard_normal((B, H, S, D), dtype=np.float32) for k in "qkv"}
    q3 = {k: v.transpose(0, 2, 1, 3).reshape(B, S, E).copy() for k, v in q4.items()}
    in4, out4 = [_vi(k, [B, H, S, D]) for k in "qkv"], [_vi("o", [B, H, S, D])]
    plain = _model(
        [
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["s"]),
            helper.make_node("Mul", ["s", "scale"], ["ss"]),
            helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "v"], ["o"]),
        ],
        in4,
        out4,
        [helper.make_tensor("scale", F, [], [D**-0.5])],
    )
    a23 = _model([helper.make_node("Attention", ["q", "k", "v"], ["o"])], in4, out4)
    mha = _model(
        [helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["o"], domain="com.microsoft", num_heads=H)],
        [_vi(k, [B, S, E]) for k in "qkv"],
        [_vi("o", [B, S, E])],
        ms=True,
    )
    return {
        "core: MatMul-Softmax-MatMul": (_session(plain), q4),
        "core: Attention-23": (_session(a23), q4),
        "core: MultiHeadAttention": (_session(mha), q3),
    }


def block_candidates(rng):
    weight = (rng.standard_normal((E, 3 * E)) * 0.05).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(np.zeros(3 * E, np.float32), "b")]
    x = rng.standard_normal((B, S, E), dtype=np.float32)
    mask = np.ones((B, S), np.int32)
    mask[:, 100:] = 0  # padding past 100 tokens
    additive = np.where(mask[:, None, None, :] == 1, 0.0, -1e4).astype(np.float32)
    additive = np.ascontiguousarray(np.broadcast_to(additive, (B, 1, S, S)))  # Attention-23 wants S_q
    fused = _model(
        [helper.make_node("Attention", ["x", "W", "b", "mask"], ["o"], domain="com.microsoft", num_heads=H)],
        [_vi("x", [B, S, E]), _vi("mask", [B, S], TensorProto.INT32)],
        [_vi("o", [B, S, E])],
        inits,
        ms=True,
    )
    split = _model(
        [
            helper.make_node("MatMul", ["x", "W"], ["qkv0"]),
            helper.make_node("Add", ["qkv0", "b"], ["qkv"]),
            helper.make_node("Split", ["qkv"], ["q", "k", "v"], axis=2, num_outputs=3),
            helper.make_node("Attention", ["q", "k", "v", "m"], ["o"], q_num_heads=H, kv_num_heads=H),
        ],
        [_vi("x", [B, S, E]), _vi("m", [B, 1, S, S])],
        [_vi("o", [B, S, E])],
        inits,
    )
    return {
        "block: com.microsoft Attention": (_session(fused), {"x": x, "mask": mask}),
        "block: MatMul + Split + Attention-23": (_session(split), {"x": x, "m": additive}),
    }


def main(rounds: int = 20) -> None:
    rng = np.random.default_rng(0)
    candidates = {**core_candidates(rng), **block_candidates(rng)}
    times = {name: [] for name in candidates}
    for _ in range(rounds):  # interleaved: drift hits every candidate alike
        for name, (session, feed) in candidates.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - start)
    for name, samples in times.items():
        print(f"{name}: p50 {np.median(samples) * 1e3:.1f} ms per layer")


if __name__ == "__main__":
    main()
