"""What a quantize run records in the manifest, and the checks of node names it was given."""

from __future__ import annotations

import difflib

import onnx

from onnxopt.errors import OnnxoptError
from onnxopt.graph_queries.int8_ops import int8_op_counts
from onnxopt.quantize.config import QuantizeConfig


def run_record(config: QuantizeConfig, options, reports, calibration, cpu: str, model) -> dict:
    """The manifest's record of a quantize run: options, CPU, layout, smoothing, and the int8 ops
    counted in the quantized model itself."""
    quant = next((r.details for r in reversed(reports) if {"fallback", "mixed_bits"} & set(r.details)), {})
    record = {
        "mode": config.mode,
        "target": config.target,
        "ops": list(config.ops),
        "per_channel": config.per_channel,
        "exclude": list(config.exclude),
        "reduce_range": options.reduce_range,
        "cpu": cpu,
        "optimize": config.optimize,
        "layout": _layout(config, model),
        "int8_ops": int8_op_counts(model),
        "dynamic_matmuls": list(options.dynamic_nodes),
        "smooth": [
            {"tensor": g["tensor"], "alpha": g["alpha"]}
            for r in reports
            if r.name == "smooth"
            for g in r.details["smoothed"]
        ],
    }
    if "fallback" in quant:
        record["fallback"] = quant["fallback"]
        record["fallback"]["eval_data"] = config.eval_data or "held-back calibration samples"
    if "mixed_bits" in quant:
        record["mixed_bits"] = {**quant["mixed_bits"], "eval_data": "held-back calibration text"}
    if calibration is not None:
        record["calibration"] = {
            "method": config.method,
            "samples": calibration.samples,
            "seq_len": config.seq_len,
            "data": config.calib_data or "embedded corpus (calib/en.txt)",
        }
    return record


def check_excluded(model, exclude: tuple[str, ...]) -> None:
    names = [n.name for n in model.graph.node]
    for name in exclude:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = (
                f"did you mean: {', '.join(close)}" if close else "run `onnxopt inspect --nodes` to list them"
            )
            raise OnnxoptError(f"--exclude names node {name!r}, which the (fused) graph does not have", hint)


def _layout(config: QuantizeConfig, model) -> str:
    bits = sorted(
        {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
    )
    inits = {t.name: t.data_type for t in model.graph.initializer}
    int8_table = any(
        n.op_type == "Gather" and inits.get(n.input[0]) == onnx.TensorProto.INT8 for n in model.graph.node
    )
    embedding = "embedding int8 per row" if int8_table else "embedding fp32"
    if config.mode == "int4":
        head = "LM head 8-bit, " if bits == [4, 8] else ""
        return (
            f"MatMulNBits int4, block {config.block_size}, {config.algo}, level {config.accuracy_level}; "
            f"{head}{embedding}"
        )
    if bits == [8]:
        return f"MatMulNBits 8-bit, block 32, level 4 (int8 multiplies); {embedding}"
    if config.target != "cpu":
        core = ", attention core fp32" if config.target == "openvino" else ""
        return f"qdq for {config.target}: plain ONNX ops{core}; {embedding}"
    return "qdq" if config.qdq else "onnxruntime-cpu"
