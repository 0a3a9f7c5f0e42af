"""Which readers of a DequantizeLinear run its output in int8, for the two layouts that prune Q/DQ
pairs: the CPU layout's float_qdq rule and, for other runtimes, qdq_fp32_readers.

The lists differ on purpose, so one function takes the list: onnxruntime's CPU provider fuses a DQ
into MatMul, Gemm, Conv and the contrib Attention op (a DQ read only by other ops goes, with its
Q); the QDQ kept for other runtimes (OpenVINO) leaves a DQ to the ops those run in int8, MatMul,
Gemm, Conv and Gather (the embedding). Either list changed would change the graphs written.
"""

from __future__ import annotations

import onnx

CPU_DQ_FUSING = ("MatMul", "Gemm", "Conv", "Attention")
QDQ_INT8_READERS = ("MatMul", "Gemm", "Conv", "Gather")


def split_readers(
    users: list[onnx.NodeProto], int8_ops: tuple[str, ...]
) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """(the readers that run a DQ's output in int8, the fp32 readers), in graph order."""
    return [u for u in users if u.op_type in int8_ops], [u for u in users if u.op_type not in int8_ops]
