"""What a quantize run records in the manifest, and the checks of node names it was given."""

from __future__ import annotations

import difflib

import onnx

from onnxopt.errors import OnnxoptError
from onnxopt.graph_queries.int8_ops import int8_op_counts


def run_record(plan, options, reports, calibration, cpu: str, model, exclude=()) -> dict:
    """The manifest's record of a quantize run: what it wrote (mode, the target laid out for, the
    nodes kept fp32, CPU, layout, smoothing, the int8 ops counted in the quantized model itself),
    the user's `options` as given and the `plan` derived from them, with its reasons."""
    config = plan.options
    quant = next((r.details for r in reversed(reports) if {"fallback", "mixed_bits"} & set(r.details)), {})
    record = {
        "mode": config.mode,
        "target": plan.target,
        "exclude": list(exclude),
        "reduce_range": options.reduce_range,
        "cpu": cpu,
        "layout": _layout(plan, model),
        "int8_ops": int8_op_counts(model),
        "dynamic_matmuls": list(options.dynamic_nodes),
        "smooth": [
            {"tensor": g["tensor"], "alpha": g["alpha"]}
            for r in reports
            if r.name == "smooth"
            for g in r.details["smoothed"]
        ],
        # Time and peak memory of each pass: what bounds a run on a large model (issue 28).
        "steps": [_step(r) for r in reports],
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in config.as_dict().items()},
        "plan": plan.as_record(tuple(exclude)),
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


def _step(report) -> dict:
    return {"name": report.name, "seconds": round(report.seconds, 2), "peak_rss_mb": report.peak_rss_mb}


def check_excluded(model, exclude: tuple[str, ...]) -> None:
    names = [n.name for n in model.graph.node]
    for name in exclude:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = (
                f"did you mean: {', '.join(close)}" if close else "run `onnxopt inspect --nodes` to list them"
            )
            raise OnnxoptError(f"--exclude names node {name!r}, which the (fused) graph does not have", hint)


def _layout(plan, model) -> str:
    bits = sorted(
        {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}
    )
    inits = {t.name: t.data_type for t in model.graph.initializer}
    int8_table = any(
        n.op_type == "Gather" and inits.get(n.input[0]) == onnx.TensorProto.INT8 for n in model.graph.node
    )
    int4_table = any(n.op_type == "GatherBlockQuantized" for n in model.graph.node)
    embedding = (
        "embedding int4 in blocks of 32"
        if int4_table
        else "embedding int8 per row"
        if int8_table
        else "embedding fp32"
    )
    config = plan.options
    if config.mode == "int4":
        head = "LM head 8-bit, " if bits == [4, 8] else ""
        algo = f"{config.algo}, blocks searched" if plan.block_search else config.algo
        return (
            f"MatMulNBits int4, block {config.block_size}, {algo}, level {config.accuracy_level}; "
            f"{head}{embedding}"
        )
    if bits == [8]:
        return f"MatMulNBits 8-bit, block 32, level 4 (int8 multiplies); {embedding}"
    if plan.plain_onnx:
        core = ", attention core fp32" if plan.attention_core_fp32 else ""
        return f"qdq for {plan.target}: plain ONNX ops{core}; {embedding}"
    return "qdq" if plan.qdq else "onnxruntime-cpu"
