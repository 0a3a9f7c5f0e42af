"""The `quantize` workflow: fuse, infer shapes, calibrate (static) and quantize a model folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.data.sts_pairs import load_sts_pairs
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate.generation import cache_context
from onnxopt.evaluate.verify import verify_staged
from onnxopt.graph_queries.smooth_error import int8_error
from onnxopt.graph_queries.smooth_groups import find_groups
from onnxopt.io import limits, model_files, saving
from onnxopt.io.cache_layout import cache_layout
from onnxopt.io.hf_config import model_type
from onnxopt.io.outputs import claim_output
from onnxopt.io.rope import rope_tables
from onnxopt.options import config_from
from onnxopt.passes import Pipeline, StepReport
from onnxopt.passes.fold_weight_transposes import FoldWeightTransposes
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.passes.fuse_transformer import FuseTransformer
from onnxopt.passes.infer_shapes import InferShapes
from onnxopt.passes.pack_projections import PackProjections
from onnxopt.passes.quantize import (
    QDQ_OPS,
    QuantizeDynamic,
    QuantizeStatic,
    QuantOptions,
    after_activation,
    quantizer_with_layout,
)
from onnxopt.passes.quantize_embeddings import QuantizeEmbeddings
from onnxopt.passes.quantize_weights import QuantizeWeights, lm_heads, weight_only_error
from onnxopt.passes.smooth import Smooth
from onnxopt.quantize.calibrate import CalibrationSummary, collect_channel_stats, collect_ranges
from onnxopt.quantize.calibration_feeds import generation_feeds
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.quantize.fallback import AccuracyAwareQuantize, FidelityDrop, StsDrop
from onnxopt.quantize.inputs import check_int4_search, load_fp32
from onnxopt.quantize.mixed_bits import PerplexityDrop, mixed_bits_search
from onnxopt.quantize.record import check_excluded, run_record
from onnxopt.quantize.target_choice import quantize_auto
from onnxopt.quantize.targets import (
    activation_layout,
    for_target,
    gelu_scales_dynamic,
    with_attention_core_excluded,
)
from onnxopt.runtime.cpu import cpu_features

# (stage name, done, total): total is 0 for stages without a count.
Progress = Callable[[str, int, int], None]
HOLDOUT = 32  # held-back samples for the accuracy-aware search
# Decoders are judged by perplexity on held-back text: 96 sentences of the embedded corpus are
# about 2,000 SmolLM2 tokens; 32 (~650 tokens) moved its int4 figure by 1-2 points between halves.
DECODER_HOLDOUT = 96
INT4_ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


@dataclass
class QuantizeResult:
    out: Path
    mode: str
    steps: list[StepReport]
    calibration: CalibrationSummary | None
    size_before: int
    size_after: int
    seconds: float
    cpu: str
    options: dict = field(default_factory=dict)  # what the manifest records
    verified: object = None  # VerifyResult, when --verify-loading ran (in the staged folder)


@dataclass
class _Data:
    """The text a run needs, read before any heavy work so bad input fails fast."""

    calibration: TokenizedSamples | None = None
    holdout: TokenizedSamples | None = None
    tokenizer: object = None
    pairs: list | None = None
    perplexity_ids: object = None  # held-back text as token ids, for decoders' --max-drop
    context: int = 0  # tokens the decoder's cache may hold


def quantize(
    src: Path,
    out: Path,
    config: QuantizeConfig | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    **options,
) -> QuantizeResult:
    """Quantize the model at `src` to int8 into `out`: fuse, infer shapes, smooth, calibrate
    (static), quantize, lay out for the CPU provider (unless --qdq), verify if asked."""
    config = for_target(config_from(QuantizeConfig, config, options))
    progress = on_progress or (lambda _stage, _done, _total: None)
    if config.target == "auto":
        return quantize_auto(src, out, config, overwrite, progress, quantize)[0]
    start = time.perf_counter()
    ref = model_files.resolve(src)
    limits.check_sequence_length(ref, config.seq_len, "--seq-len")
    with claim_output(out, [ref.folder or ref.onnx_path], overwrite) as claim:
        model = load_fp32(ref)
        # Smoothing is on wherever calibration text can be tokenized (static: always). For int4 it
        # is chosen by the weight-only error: SmolLM2 int4 block 32, perplexity on STS-B dev text
        # (2026-12-02), +22.1% -> +12.7% over fp32 (RMSNorm outputs). Not adopted: the SwiGLU
        # products too (Smooth(gates=True)): +12.0% on dev but +15.4% against +14.3% on held-out
        # STS-B train text; AWQ's scale max|X|^alpha instead of SmoothQuant's: +13.6% on dev.
        default = config.mode == "static" or ref.has_tokenizer()
        smooth = default if config.smooth is None else config.smooth
        data = _read_data(ref, model, config, smooth)
        model, reports = _prepare(model, ref, config, data, smooth, progress)
        config = with_attention_core_excluded(config, model)
        quantizer, calibration, options = _quantizer(model, config, data, progress)
        progress(quantizer.name, 0, 0)
        steps = [quantizer, QuantizeEmbeddings()] if config.embeddings else [quantizer]
        model, quant_reports = Pipeline(steps).run(model)
        reports += quant_reports
        cpu = cpu_features().describe(options.activations)
        record = run_record(config, options, reports, calibration, cpu, model)
        progress("save", 0, 0)
        with claim.staged() as tmp:
            saving.save(model, tmp)
            model_files.copy_sidecars(ref.folder, tmp, model)
            manifest = ref.derived_manifest(model)
            manifest.add_step(f"quantize-{config.mode}", **record)
            manifest.save(tmp)
            verified = verify_staged(config.verify_loading, tmp, ref.folder, out)
        summary = calibration and CalibrationSummary(
            calibration.samples, calibration.seconds, calibration.peak_rss_mb, config.method
        )
        size_after, seconds = model_files.resolve(out).size_bytes(), time.perf_counter() - start
        return QuantizeResult(
            out,
            config.mode,
            reports,
            summary,
            ref.size_bytes(),
            size_after,
            seconds,
            record["cpu"],
            record,
            verified,
        )


def _read_data(ref, model, config: QuantizeConfig, smooth: bool) -> _Data:
    check_int4_search(model, config.mode, config.max_drop, ref.name)
    if config.eval_data and cache_layout(model) is not None:
        raise OnnxoptError(
            "--eval-data takes STS pairs, which score encoders; a decoder's --max-drop is its rise "
            "in perplexity (%) on held-back text",
            "drop --eval-data; --calib-data FILE chooses the text (the rest past --calib is held back)",
        )
    data = _Data(pairs=load_sts_pairs(Path(config.eval_data)) if config.eval_data else None)
    calibrated = config.mode == "static" or (config.mode == "int4" and config.algo == "gptq")
    if not (calibrated or config.max_drop is not None or smooth):
        return data  # dynamic int8 or RTN/HQQ int4 without smoothing reads no text
    data.tokenizer = load_tokenizer(ref.folder)
    types = input_types(model)
    holdout = HOLDOUT if types.cache is None else DECODER_HOLDOUT
    wanted = config.calib + (holdout if config.max_drop is not None else 0)
    if config.calib_data:
        samples = load_samples(config.calib_data, wanted, config.text_column)
    else:
        samples = embedded_samples(wanted, clip=config.max_drop is not None)
    # Accuracy checks use samples calibration never saw, when the data has enough of them.
    data.calibration = TokenizedSamples(samples[: config.calib], data.tokenizer, types, config.seq_len)
    data.holdout = TokenizedSamples(
        samples[config.calib :] or samples[:HOLDOUT], data.tokenizer, types, config.seq_len
    )
    limit = limits.max_sequence_length(ref.folder)
    if calibrated and types.cache is not None:  # a decoder: calibrated on what it sees generating
        data.calibration = generation_feeds(model, data.calibration, limit[0] if limit else None)
    if types.cache is not None and config.max_drop is not None:
        held = [s if isinstance(s, str) else " ".join(s) for s in samples[config.calib :] or samples]
        data.perplexity_ids = np.array(data.tokenizer("\n\n".join(held))["input_ids"], dtype=np.int64)
        data.context = cache_context(ref.folder)
    return data


def _prepare(model, ref, config: QuantizeConfig, data: _Data, smooth: bool, progress):
    """Fusion (unless --no-optimize) and shape inference, then smoothing."""
    prepare = [FuseTransformer(model_type(ref.folder))] if config.optimize else []
    decoder = config.optimize and cache_layout(model) is not None
    if decoder:
        prepare.append(FuseDecoderAttention(rope_tables(ref.folder)))
    # A tied LM head gets a weight of its own, so the quantizers reach it (passes/fold_weight_transposes).
    prepare.append(FoldWeightTransposes())
    if decoder and config.mode in ("int4", "dynamic") and not config.qdq:  # weight-only MatMulNBits
        prepare.append(PackProjections(config.exclude))  # after the fold: transposed weights pack too
    passes = [*prepare, InferShapes()]
    model, reports = Pipeline(passes).run(model, on_step=lambda name: progress(name, 0, 0))
    check_excluded(model, config.exclude)
    if smooth:
        progress("smooth", 0, 0)
        # A Mul OpenVINO fuses with the FakeQuantize after it (smooth.py): static scales only.
        explicit = config.target == "openvino" and config.mode == "static"
        tensors = [group.tensor for group in find_groups(model, explicit=explicit)[0]]
        stats = collect_channel_stats(model, data.calibration, tensors)
        error = partial(weight_only_error, block=config.block_size, algo=config.algo)  # exact activations
        # 8-bit MatMulNBits keeps full-range weights; the int8 quantizers not (see _quantizer).
        weight_only = config.mode == "dynamic" and cache_layout(model) is not None and not config.qdq
        int8 = int8_error(cpu_features().reduce_range and not weight_only)
        chosen = {"alphas": INT4_ALPHAS, "error": error} if config.mode == "int4" else {"error": int8}
        model, smooth_reports = Pipeline([Smooth(stats, explicit=explicit, **chosen)]).run(model)
        reports += smooth_reports
    return model, reports


def _quantizer(model, config: QuantizeConfig, data: _Data, progress):
    """The quantizer pass (wrapped in the accuracy-aware search with --max-drop), the calibration
    it used, and its options."""
    options = QuantOptions(
        op_types=config.ops,
        per_channel=config.per_channel,
        reduce_range=cpu_features().reduce_range,
        exclude=config.exclude,
        no_output_qdq=QDQ_OPS if config.target != "cpu" else (),
        **activation_layout(config.target, config.mode),
    )
    weights_only = None
    if config.mode == "int4":
        weights_only = _int4(model, config, data)
    elif config.mode == "dynamic" and cache_layout(model) is not None and not config.qdq:
        # Decoders: 8-bit MatMulNBits (blocks of 32, int8 multiplies) instead of
        # DynamicQuantizeMatMul. SmolLM2, 2026-12-01, AMD EPYC AVX512-VNNI, perplexity on STS-B
        # dev text: +0.3% at 2.12x fp32's decode speed, against +6.9% at 1.69x.
        weights_only = QuantizeWeights(8, 32, "rtn", 4, config.exclude)
    if weights_only is not None:
        if config.max_drop is not None:
            metric = PerplexityDrop.of(model, data.perplexity_ids, data.context, config.seq_len)
            weights_only = mixed_bits_search(model, config, data.calibration, weights_only, metric, progress)
        return weights_only, None, options
    if config.mode == "static" and gelu_scales_dynamic(config):
        options = replace(options, dynamic_nodes=after_activation(model))
    calibration = None
    if config.mode == "static":
        static_ops = [op for op in config.ops if op in QDQ_OPS]
        count = len(data.calibration)
        calibration = collect_ranges(
            model,
            data.calibration,
            config.method,
            static_ops,
            on_sample=lambda i: progress("calibrate", i, count),
        )

        def make_quantizer(excl: tuple[str, ...]):
            quantizer = QuantizeStatic(calibration.ranges, calibration.method, replace(options, exclude=excl))
            return quantizer_with_layout(quantizer, not config.qdq, config.target != "cpu")
    else:

        def make_quantizer(excl: tuple[str, ...]):
            dynamic = QuantizeDynamic(replace(options, exclude=excl))
            return quantizer_with_layout(dynamic, not config.qdq, config.target != "cpu")

    if config.max_drop is None:
        return make_quantizer(options.exclude), calibration, options
    progress("reference outputs", 0, 0)
    ranker = FidelityDrop(model, list(data.holdout))
    metric = ranker
    if data.perplexity_ids is not None:
        metric = PerplexityDrop.of(model, data.perplexity_ids, data.context, config.seq_len)
    elif data.pairs is not None:
        metric = StsDrop(model, data.pairs, data.tokenizer, input_types(model), config.seq_len)
    search = AccuracyAwareQuantize(
        make_quantizer, config.ops, options.exclude, ranker, metric, metric.name, config.max_drop, progress
    )
    return search, calibration, options


def _int4(model, config: QuantizeConfig, data: _Data):
    """4-bit MatMulNBits for the body; the LM head stays 8-bit: SmolLM2 with its head in int4 lost
    +27.5% perplexity (STS-B dev text, 2026-12-01); the head is one matrix, so 8 bits cost 14 MB
    and no measurable speed."""
    heads = lm_heads(model)
    excluded, feeds = config.exclude + heads, data.calibration or ()
    body = QuantizeWeights(4, config.block_size, config.algo, config.accuracy_level, excluded, feeds)
    if not heads:
        return body
    head = QuantizeWeights(8, 32, "rtn", 4, config.exclude, include=heads)
    return Pipeline([body, head], name=body.name)
