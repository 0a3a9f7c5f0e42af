"""The attention core in int8 against fp32 on the CPU provider (issue 17, item 4): MatMulInteger
for QK^T and PV, Q/K/V quantized dynamically, the probabilities with a fixed 1/255 scale. MiniLM
shapes (12 heads of 32), batch 32, seq 128, one layer, 2 threads, interleaved:

    python benchmarks/attention_core_int8.py
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

B, H, S, D = 32, 12, 128, 32


def fp32_core():
    nodes = [
        h.make_node("MatMul", ["q", "kt"], ["s"]),
        h.make_node("Softmax", ["s"], ["p"], axis=-1),
        h.make_node("MatMul", ["p", "v"], ["o"]),
    ]
    return nodes, []


def int8_core():
    inits = [
        nh.from_array(np.array(1 / 255, np.float32), "pscale"),
        nh.from_array(np.array(0, np.uint8), "pzero"),
    ]
    nodes = [
        h.make_node("DynamicQuantizeLinear", ["q"], ["q8", "qs", "qz"]),
        h.make_node("DynamicQuantizeLinear", ["kt"], ["k8", "ks", "kz"]),
        h.make_node("MatMulInteger", ["q8", "k8", "qz", "kz"], ["s32"]),
        h.make_node("Cast", ["s32"], ["sf"], to=T.FLOAT),
        h.make_node("Mul", ["qs", "ks"], ["qks"]),
        h.make_node("Mul", ["sf", "qks"], ["s"]),
        h.make_node("Softmax", ["s"], ["p"], axis=-1),
        h.make_node("QuantizeLinear", ["p", "pscale", "pzero"], ["p8"]),
        h.make_node("DynamicQuantizeLinear", ["v"], ["v8", "vs", "vz"]),
        h.make_node("MatMulInteger", ["p8", "v8", "pzero", "vz"], ["o32"]),
        h.make_node("Cast", ["o32"], ["of"], to=T.FLOAT),
        h.make_node("Mul", ["vs", "pscale"], ["pvs"]),
        h.make_node("Mul", ["of", "pvs"], ["o"]),
    ]
    return nodes, inits


def session(builder):
    nodes, inits = builder()
    g = h.make_graph(
        nodes,
        "core",
        [
            h.make_tensor_value_info("q", T.FLOAT, [B, H, S, D]),
            h.make_tensor_value_info("kt", T.FLOAT, [B, H, D, S]),
            h.make_tensor_value_info("v", T.FLOAT, [B, H, S, D]),
        ],
        [h.make_tensor_value_info("o", T.FLOAT, [B, H, S, D])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


rng = np.random.default_rng(0)
feed = {
    "q": rng.standard_normal((B, H, S, D), np.float32),
    "kt": rng.standard_normal((B, H, D, S), np.float32),
    "v": rng.standard_normal((B, H, S, D), np.float32),
}
ss = {"fp32": session(fp32_core), "int8": session(int8_core)}
ref = ss["fp32"].run(None, feed)[0]
got = ss["int8"].run(None, feed)[0]
print("rel err int8 core", float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
t = {k: [] for k in ss}
for _ in range(60):
    for k, s in ss.items():
        a = time.perf_counter()
        s.run(None, feed)
        t[k].append((time.perf_counter() - a) * 1e3)
for k in t:
    print(k, f"{np.median(t[k]):.2f} ms per layer core (batch {B})")
