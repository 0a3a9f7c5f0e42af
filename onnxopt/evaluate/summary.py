"""`inspect`: what a model is, read from the graph and its manifest without running it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import helper

from onnxopt.evaluate.fp32_kept import Fp32Group, fp32_kept, parameter_count
from onnxopt.graph_queries.int8_ops import quantized_ops as quantized_op_types
from onnxopt.io import model_files


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[str | int]


@dataclass
class ModelSummary:
    path: str
    size_bytes: int
    ir_version: int
    opsets: dict[str, int]
    parameters: int
    op_histogram: dict[str, int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    quantized_ops: dict[str, int]
    int8_weight_share: float  # fraction of parameters stored as 8-bit
    steps: list[str] = field(default_factory=list)
    pruned: dict | None = None
    source: str | None = None
    task: str | None = None
    nodes: list[tuple[str, str]] = field(default_factory=list)
    fp32_kept: list[Fp32Group] = field(default_factory=list)  # quantized models: what stayed fp32, why

    @property
    def quantized(self) -> bool:
        return bool(self.quantized_ops)


def _tensor_infos(values) -> list[TensorInfo]:
    infos = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim] if t.HasField("shape") else []
        infos.append(
            TensorInfo(
                v.name, helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?", shape
            )
        )
    return infos


def _packed_weights(model: onnx.ModelProto) -> dict[str, int]:
    """MatMulNBits weight initializer -> the weights it holds (K x N), not its packed bytes: an
    int4 byte holds two."""
    found = {}
    for n in model.graph.node:
        if n.op_type == "MatMulNBits" and len(n.input) > 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if isinstance(attrs.get("K"), int) and isinstance(attrs.get("N"), int):
                found[n.input[1]] = attrs["K"] * attrs["N"]
    return found


def summarize(path: Path, with_nodes: bool = False) -> ModelSummary:
    ref = model_files.resolve(path)
    model = model_files.load(ref, load_weights=False)
    initializer_names = {t.name for t in model.graph.initializer}
    packed = _packed_weights(model)
    params = 0
    int8_params = 0
    for t in model.graph.initializer:
        count = packed.get(t.name) or parameter_count(t)
        params += count
        if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            int8_params += count
    ops = Counter(n.op_type for n in model.graph.node)
    # Weight-only ops (int4 / 8-bit MatMulNBits) count too: int4 models once showed "quantized: no".
    low_bit = set(quantized_op_types(model))
    quantized_ops = {op: n for op, n in ops.items() if op in low_bit}
    manifest = ref.manifest
    pruned = None
    steps: list[str] = []
    if manifest is not None:
        steps = manifest.step_names()
        pruned = next((s for s in manifest.steps if s["step"] == "prune"), None)
    return ModelSummary(
        path=ref.name,
        size_bytes=ref.size_bytes(),
        ir_version=model.ir_version,
        opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
        parameters=params,
        op_histogram=dict(ops.most_common()),
        inputs=_tensor_infos(i for i in model.graph.input if i.name not in initializer_names),
        outputs=_tensor_infos(model.graph.output),
        quantized_ops=quantized_ops,
        int8_weight_share=int8_params / params if params else 0.0,
        steps=steps,
        pruned=pruned,
        source=manifest.source if manifest else None,
        task=manifest.task if manifest else None,
        nodes=[(n.name, n.op_type) for n in model.graph.node] if with_nodes else [],
        fp32_kept=fp32_kept(model, manifest.steps if manifest else []) if quantized_ops else [],
    )
