"""One graph quantized under a plan: fusion (unless the plan says not), shape inference,
smoothing, then the quantizer the plan names. A one-graph model goes through here once, each part
of an encoder-decoder once (parts.py): the same rules for every kind."""

from __future__ import annotations

from functools import partial

from onnxopt.graph_queries.smooth_error import int8_error
from onnxopt.graph_queries.weight_grids import weight_only_error
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.rope import rope_tables
from onnxopt.passes import Pipeline
from onnxopt.passes.fold_weight_transposes import FoldWeightTransposes
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.passes.fuse_rms_norm import FuseRmsNorm
from onnxopt.passes.fuse_transformer import FuseTransformer
from onnxopt.passes.infer_shapes import InferShapes
from onnxopt.passes.pack_projections import PackProjections
from onnxopt.passes.quantize import QDQ_OPS, QuantOptions
from onnxopt.passes.quantize_embeddings import QuantizeEmbeddings
from onnxopt.passes.smooth import Smooth
from onnxopt.quantize.calibrate import collect_channel_stats
from onnxopt.quantize.int8 import int8_quantizer
from onnxopt.quantize.plan import QuantizePlan
from onnxopt.quantize.record import check_excluded
from onnxopt.quantize.texts import RunData
from onnxopt.quantize.weight_only import weight_only_quantizer

INT4_ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def quantize_graph(model, folder, plan: QuantizePlan, data: RunData, progress, part: str = ""):
    """(quantized model, step reports, calibration or None, QuantOptions, nodes kept fp32).
    `model` is rewritten in place where a pass can: the caller gives it up."""
    label = f" {part}" if part else ""
    model, reports = prepare(model, folder, plan, data, progress, label)
    exclude = plan.excluded(model)
    quantizer, calibration, options = quantizer_for(model, plan, exclude, data, progress, label)
    progress(f"{quantizer.name}{label}", 0, 0)
    steps = [quantizer, QuantizeEmbeddings(plan.embedding_bits)] if plan.embeddings else [quantizer]
    if plan.fuse_decoder_attention and plan.weight_bits is not None:
        steps.append(FuseRmsNorm())  # last: smoothing and the quantizers read the norms' Muls
    model, quant_reports = Pipeline(steps).run(model, owned=True)
    return model, reports + quant_reports, calibration, options, exclude


def prepare(model, folder, plan: QuantizePlan, data: RunData, progress, label: str = ""):
    """Fusion (unless the plan says not) and shape inference, then smoothing."""
    prepare = [FuseTransformer(ModelInfo.read(folder).model_type)] if plan.optimize else []
    if plan.fuse_decoder_attention:
        prepare.append(FuseDecoderAttention(rope_tables(folder)))
    # A tied LM head gets a weight of its own, so the quantizers reach it (passes/fold_weight_transposes).
    prepare.append(FoldWeightTransposes())
    if plan.pack_projections:  # weight-only MatMulNBits
        prepare.append(PackProjections(plan.options.exclude))  # after the fold: transposed weights pack too
    passes = [*prepare, InferShapes()]
    # Owned: the callers load `model` for this run and read only what comes back, so the passes
    # rewrite it in place (a Llama-3.2-1B shape was held 3-5 times over and killed at 22 GB).
    model, reports = Pipeline(passes).run(model, on_step=lambda name: progress(name, 0, 0), owned=True)
    check_excluded(model, plan.options.exclude)
    if plan.smooth:
        progress(f"smooth{label}", 0, 0)

        def on_group(done, total):
            progress(f"smooth{label}", done, total)

        smooth = smoothing(plan, data.calibration, on_group)
        model, smooth_reports = Pipeline([smooth]).run(model, owned=True)
        reports += smooth_reports
    return model, reports


def smoothing(plan: QuantizePlan, feeds, on_group=None) -> Smooth:
    """The Smooth pass, its alpha chosen by the simulated error on the grid the quantizer writes."""
    # A Mul OpenVINO fuses with the FakeQuantize after it (smooth.py): static scales only.
    explicit = plan.smooth_explicit

    def stats(graph, tensors):  # Smooth finds its groups and asks for exactly their tensors
        return collect_channel_stats(graph, feeds, tensors)

    if plan.smooth_grid == "int4":
        config = plan.options
        error = partial(weight_only_error, block=config.block_size, algo=config.algo)  # exact activations
        return Smooth(stats, explicit=explicit, alphas=INT4_ALPHAS, error=error, on_group=on_group)
    return Smooth(stats, explicit=explicit, error=int8_error(plan.smooth_reduce_range), on_group=on_group)


def quantizer_for(model, plan: QuantizePlan, exclude, data: RunData, progress, label: str = ""):
    """The quantizer pass (wrapped in the accuracy-aware search with --max-drop), the calibration
    it used, and its options."""
    options = plan_options(plan, exclude)
    if plan.weight_bits is not None:
        return weight_only_quantizer(model, plan, exclude, data, progress), None, options
    return int8_quantizer(model, plan, options, data, progress, label)


def plan_options(plan: QuantizePlan, exclude) -> QuantOptions:
    return QuantOptions(
        op_types=plan.ops,
        per_channel=plan.options.per_channel,
        reduce_range=plan.reduce_range,
        exclude=exclude,
        no_output_qdq=QDQ_OPS if plan.plain_onnx else (),
        **({"activations": plan.activations} if plan.activations != "u8" else {}),
    )
