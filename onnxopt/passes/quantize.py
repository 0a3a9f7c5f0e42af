"""int8 quantization passes, on top of onnxruntime.quantization.

Static: activation ranges come from our own streaming calibration (onnxopt.quantize.calibrate) and are
handed to `quantize_static` through its calibration cache, so the tool never holds activations.
Ops with a static int8 kernel on the CPU provider (MatMul, Gemm) get QDQ pairs. These passes
produce the portable form; `quantizer_with_layout` adds the separate CpuInt8Layout pass, which
rewrites it into the int8 kernels the CPU provider runs fastest (see there). For that layout,
QuantizeStatic(int8_kernels=True) writes the MatMuls' kernels itself (quantize_static_matmul.py:
same numbers, one weight at a time) and leaves quantize_static what remains.
onnxruntime has no static int8 kernel for the fused Attention and EmbedLayerNormalization ops,
so those get int8 weights with dynamic activation scales (QAttention, QEmbedLayerNormalization);
that is reported, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxopt.choices import DYNAMIC_ONLY_OPS, QDQ_OPS, QUANTIZE_OPS
from onnxopt.graph_queries.int8_ops import int8_op_counts
from onnxopt.io.leftovers import temp_dir
from onnxopt.io.scratch import through_files
from onnxopt.passes.base import Pass, PassResult, Pipeline, copy_model
from onnxopt.passes.cpu_int8_layout import CpuInt8Layout
from onnxopt.passes.qdq_fp32_readers import QdqFp32Readers
from onnxopt.passes.quantize_static_matmul import QuantizeStaticMatMuls

__all__ = [  # the op lists live in choices.py
    "DYNAMIC_ONLY_OPS",
    "PORTABLE_LAYOUT",
    "QDQ_OPS",
    "QuantOptions",
    "QuantizeDynamic",
    "QuantizeStatic",
    "quantizer_with_layout",
]


def _no_types_extra() -> dict:
    # Contrib ops leave some tensors untyped even after symbolic inference; they are float here.
    return {"DefaultTensorType": onnx.TensorProto.FLOAT}


def _dynamic_tool(opts: QuantOptions, op_types, nodes: list[str] | None = None):
    """onnxruntime's quantize_dynamic as a file-to-file tool; `nodes` limits it to those nodes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def tool(src: Path, dst: Path) -> None:
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=list(op_types),
            nodes_to_quantize=nodes,
            per_channel=opts.per_channel,
            reduce_range=opts.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(opts.exclude),
            extra_options=_no_types_extra(),
            use_external_data_format=_has_external_data(src),
        )

    return tool


def _has_external_data(src: Path) -> bool:
    # A model written with external data (past 2 GB) must be saved the same way by the quantizer:
    # its output still holds what it does not quantize (a large fp32 embedding, say).
    from onnxopt.io.saving import data_file

    return data_file(src).is_file()


@dataclass(frozen=True)
class QuantOptions:
    op_types: tuple[str, ...] = QUANTIZE_OPS
    per_channel: bool = True
    reduce_range: bool = False
    exclude: tuple[str, ...] = ()
    # MatMul nodes that get dynamic activation scales even in static mode (matmul_roles.after_activation).
    dynamic_nodes: tuple[str, ...] = ()
    # Op types whose outputs get no QDQ pair of their own (onnxruntime's static QDQ quantizes a
    # MatMul's output before its bias Add; OpenVINO then runs one more requantization per layer).
    no_output_qdq: tuple[str, ...] = ()
    # Static activations: "u8" (the CPU provider's kernels) or "s8" (OpenVINO's int8 layers; see
    # quantize/targets.py for what u8 cost there).
    activations: str = "u8"


# The value of details["layout"] for what the quantize passes write; CpuInt8Layout says its own.
PORTABLE_LAYOUT = "qdq"


def quantizer_with_layout(quantizer: Pass, cpu_layout: bool, fp32_readers: bool = False) -> Pass:
    """`quantizer`, followed by CpuInt8Layout when `cpu_layout`: one pass either way, named after
    the quantizer. Without the layout the portable QDQ form stays, which other runtimes (OpenVINO,
    TensorRT) read; `fp32_readers` then points the fp32 readers of each quantized tensor at the
    tensor itself (QdqFp32Readers)."""
    if cpu_layout:
        return Pipeline([quantizer, CpuInt8Layout()], name=quantizer.name)
    if fp32_readers:
        return Pipeline([quantizer, QdqFp32Readers()], name=quantizer.name)
    return quantizer


class QuantizeDynamic(Pass):
    name = "quantize-dynamic"
    in_place = False  # through files: the input model is written out, never changed
    changes_input = False

    def __init__(self, options: QuantOptions):
        self.options = options

    def call(self, model: onnx.ModelProto) -> PassResult:
        opts = self.options
        quantized = through_files(model, _dynamic_tool(opts, opts.op_types))
        return PassResult(quantized, True, _details(quantized, opts, "u8 (dynamic)"))


class QuantizeStatic(Pass):
    name = "quantize-static"
    in_place = False  # through files: the input model is written out, never changed
    changes_input = False

    def __init__(self, ranges, method, options: QuantOptions, int8_kernels: bool = False):
        self.ranges = ranges  # onnxruntime TensorsData from onnxopt.quantize.calibrate
        self.method = method  # onnxruntime CalibrationMethod the ranges were computed with
        self.options = options
        # MatMuls straight into the CPU provider's int8 kernel (QuantizeStaticMatMuls), for the
        # CPU layout; the portable QDQ form is onnxruntime's quantize_static's.
        self.int8_kernels = int8_kernels

    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.calibrate import save_tensors_data

        opts = self.options
        static_ops = [op for op in opts.op_types if op in QDQ_OPS]
        reported = list(static_ops)
        dynamic_ops = [op for op in opts.op_types if op in DYNAMIC_ONLY_OPS]
        dynamic_nodes = [n for n in opts.dynamic_nodes if n not in opts.exclude]
        if dynamic_nodes and "MatMul" in static_ops:
            dynamic_ops.append("MatMul")
        source, kernels = model, None
        if self.int8_kernels and "MatMul" in static_ops:
            kept = {*opts.exclude, *dynamic_nodes}
            model, kernels = self._own_matmuls(model, sorted(kept))
            # What it did not write (a Gemm, an activation x activation MatMul) stays
            # quantize_static's; with nothing left, that tool (a whole-model load) is not run.
            left = {n.op_type for n in model.graph.node if n.op_type in static_ops and n.name not in kept}
            static_ops = [op for op in static_ops if op in left]
        with temp_dir("ranges") as tmp:
            cache = Path(tmp) / "ranges.json"
            save_tensors_data(self.ranges, cache)

            def static_tool(src: Path, dst: Path) -> None:
                quantize_static(
                    src,
                    dst,
                    None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=static_ops,
                    per_channel=opts.per_channel,
                    reduce_range=opts.reduce_range,
                    activation_type=QuantType.QInt8 if opts.activations == "s8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=[*opts.exclude, *dynamic_nodes],
                    calibrate_method=self.method,
                    calibration_cache_path=cache,
                    extra_options={
                        **_no_types_extra(),
                        "OpTypesToExcludeOutputQuantization": list(opts.no_output_qdq),
                    },
                    use_external_data_format=_has_external_data(src),
                )

            quantized = through_files(model, static_tool) if static_ops else model
        if dynamic_ops:
            # Only the fused ops and the chosen MatMuls: the QDQ MatMuls must not be quantized twice.
            targets = [n.name for n in quantized.graph.node if n.op_type in DYNAMIC_ONLY_OPS] + dynamic_nodes

            quantized = through_files(quantized, _dynamic_tool(opts, dynamic_ops, targets))
        if quantized is source:  # nothing to quantize: still a new object, as a functional pass returns
            quantized = copy_model(model)
        details = _details(quantized, opts, opts.activations, static_ops=reported)
        details.update(dynamic_matmuls=dynamic_nodes, dynamic_activation_ops=dynamic_ops)
        if kernels is not None:
            details["int8_kernels"] = kernels
        return PassResult(quantized, True, details)

    def _own_matmuls(self, model: onnx.ModelProto, exclude: list[str]) -> tuple[onnx.ModelProto, dict]:
        ranges = {name: self.ranges[name].range_value for name in self.ranges}
        opts = self.options
        signed = opts.activations == "s8"
        own = QuantizeStaticMatMuls(ranges, exclude, opts.reduce_range, opts.per_channel, signed)(model)
        return own.model, own.details


def _details(quantized: onnx.ModelProto, opts: QuantOptions, activations: str, **more) -> dict:
    """What both quantize passes report, in this order, then `more`."""
    return {
        "layout": PORTABLE_LAYOUT,
        "int8_ops": int8_op_counts(quantized),
        "weights": "s8",
        "activations": activations,
        "per_channel": opts.per_channel,
        **more,
    }
