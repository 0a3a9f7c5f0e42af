"""The `quantize` workflow: fuse, infer shapes, calibrate (static) and quantize a model folder."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate.sts import load_sts_pairs
from onnxopt.evaluate.verify import verify_staged
from onnxopt.io import limits, model_files
from onnxopt.io.files import read_config
from onnxopt.io.outputs import claim_output
from onnxopt.passes import Pipeline, StepReport
from onnxopt.passes.fuse_transformer import FuseTransformer
from onnxopt.passes.infer_shapes import InferShapes
from onnxopt.passes.quantize import (
    DEFAULT_OPS,
    INT8_OPS,
    QDQ_OPS,
    SUPPORTED_OPS,
    QuantizeDynamic,
    QuantizeStatic,
    QuantOptions,
    after_activation,
)
from onnxopt.passes.smooth import Smooth, find_groups
from onnxopt.quantize.calibrate import METHODS, CalibrationResult, collect_channel_stats, collect_ranges
from onnxopt.quantize.fallback import AccuracyAwareQuantize, FidelityDrop, StsDrop
from onnxopt.runtime.cpu import cpu_features
from onnxopt.runtime.sessions import check_loads

# (stage name, done, total): total is 0 for stages without a count.
Progress = Callable[[str, int, int], None]
HOLDOUT = 32  # held-back samples for the accuracy-aware search


@dataclass
class QuantizeResult:
    out: Path
    mode: str
    steps: list[StepReport]
    calibration: CalibrationResult | None
    size_before: int
    size_after: int
    seconds: float
    cpu: str
    options: dict = field(default_factory=dict)
    verified: object = None  # VerifyResult, when --verify-loading ran (in the staged folder)


def model_type_of(folder: Path | None) -> str | None:
    model_type = read_config(folder).get("model_type")
    return model_type if isinstance(model_type, str) else None


def parse_ops(spec: str | None) -> tuple[str, ...]:
    if not spec:
        return DEFAULT_OPS
    ops = tuple(op.strip() for op in spec.split(",") if op.strip())
    unknown = [op for op in ops if op not in SUPPORTED_OPS]
    if unknown or not ops:
        raise OnnxoptError(
            f"cannot quantize op type {unknown[0] if unknown else spec!r}",
            f"--ops takes a comma list of: {', '.join(SUPPORTED_OPS)}",
        )
    return ops


def quantize(
    src: Path,
    out: Path,
    mode: str,
    calib: int = 40,
    calib_data: str | None = None,
    text_column: str | None = None,
    method: str = "minmax",
    per_channel: bool = True,
    ops: str | None = None,
    exclude: tuple[str, ...] = (),
    seq_len: int = 128,
    optimize: bool = True,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    max_drop: float | None = None,
    eval_data: str | None = None,
    all_static: bool = False,
    smooth: bool | None = None,
    qdq: bool = False,
    verify_loading: bool = False,
) -> QuantizeResult:
    progress = on_progress or (lambda _stage, _done, _total: None)
    if mode not in ("static", "dynamic"):
        raise OnnxoptError(f"unknown quantization mode {mode!r}", "pass --static or --dynamic")
    if method not in METHODS:
        raise OnnxoptError(f"unknown calibration method {method!r}", f"use one of: {', '.join(METHODS)}")
    if mode == "static" and calib < 1:
        raise OnnxoptError(f"--calib must be at least 1, got {calib}", "40 samples are usually enough")
    if max_drop is not None and max_drop < 0:
        raise OnnxoptError(f"--max-drop must be 0 or more, got {max_drop:g}", "e.g. --max-drop 0.1")
    if eval_data is not None and max_drop is None:
        raise OnnxoptError("--eval-data is used by the accuracy-aware search", "pass --max-drop X with it")
    if seq_len < 1:
        raise OnnxoptError(f"--seq-len must be at least 1, got {seq_len}", "128 suits most sentence models")
    op_types = parse_ops(ops)
    start = time.perf_counter()
    ref = model_files.resolve(src)
    limits.check_sequence_length(ref, seq_len, "--seq-len")
    with claim_output(out, [ref.folder or ref.onnx_path], overwrite) as claim:
        model = model_files.load(ref)
        check_loads(ref.onnx_path)
        already = sorted({n.op_type for n in model.graph.node if n.op_type in INT8_OPS})
        if already:
            raise OnnxoptError(
                f"{ref.name} is already quantized (it has {', '.join(already[:3])})",
                "quantize the fp32 model instead",
            )
        if smooth is None:  # on wherever calibration text can be tokenized; dynamic works without it
            smooth = mode == "static" or ref.has_tokenizer()
        features = cpu_features()
        options = QuantOptions(
            op_types=op_types,
            per_channel=per_channel,
            reduce_range=features.reduce_range,
            exclude=tuple(exclude),
            cpu_layout=not qdq,
        )

        # Static needs samples before any heavy work, so bad calibration input fails fast.
        tokenized = holdout = None
        if mode == "static" or max_drop is not None or smooth:
            tokenizer = load_tokenizer(ref.folder)
            wanted = calib + (HOLDOUT if max_drop is not None else 0)
            if calib_data:
                samples = load_samples(calib_data, wanted, text_column)
            else:
                samples = embedded_samples(wanted, clip=max_drop is not None)
            # Accuracy checks use samples calibration never saw, when the data has enough of them.
            holdout_samples = samples[calib:] or samples[:HOLDOUT]
            tokenized = TokenizedSamples(samples[:calib], tokenizer, input_types(model), seq_len)
            holdout = TokenizedSamples(holdout_samples, tokenizer, input_types(model), seq_len)
        pairs = load_sts_pairs(Path(eval_data)) if eval_data else None

        prepare = [InferShapes()]
        if optimize:
            prepare.insert(0, FuseTransformer(model_type_of(ref.folder)))
        model, reports = Pipeline(prepare).run(model, on_step=lambda name: progress(name, 0, 0))
        _check_excluded(model, exclude)
        if smooth:
            assert tokenized is not None
            progress("smooth", 0, 0)
            tensors = [group.tensor for group in find_groups(model)[0]]
            stats = collect_channel_stats(model, tokenized, tensors)
            model, smooth_reports = Pipeline([Smooth(stats)]).run(model)
            reports += smooth_reports
        if mode == "static" and not all_static:
            options = replace(options, dynamic_nodes=after_activation(model))

        calibration = None
        if mode == "static":
            assert tokenized is not None
            static_ops = [op for op in op_types if op in QDQ_OPS]
            calibration = collect_ranges(
                model,
                tokenized,
                method,
                static_ops,
                on_sample=lambda i: progress("calibrate", i, len(tokenized)),
            )

            def make_quantizer(excl: tuple[str, ...]):
                return QuantizeStatic(calibration.ranges, calibration.method, replace(options, exclude=excl))
        else:

            def make_quantizer(excl: tuple[str, ...]):
                return QuantizeDynamic(replace(options, exclude=excl))

        quantizer = make_quantizer(options.exclude)
        if max_drop is not None:
            assert holdout is not None
            progress("reference outputs", 0, 0)
            ranker = FidelityDrop(model, list(holdout))
            if pairs is not None:
                metric = StsDrop(model, pairs, tokenizer, input_types(model), seq_len)
            else:
                metric = ranker
            quantizer = AccuracyAwareQuantize(
                make_quantizer, op_types, options.exclude, ranker, metric, metric.name, max_drop, progress
            )
        progress(quantizer.name, 0, 0)
        model, quant_reports = Pipeline([quantizer]).run(model)
        reports += quant_reports

        record = {
            "mode": mode,
            "ops": list(op_types),
            "per_channel": per_channel,
            "exclude": list(exclude),
            "reduce_range": options.reduce_range,
            "cpu": features.describe(),
            "optimize": optimize,
            "layout": quant_reports[-1].details.get("layout", "qdq"),
            "int8_ops": quant_reports[-1].details.get("int8_ops", {}),
            "dynamic_matmuls": list(options.dynamic_nodes),
            "smooth": [
                {"tensor": g["tensor"], "alpha": g["alpha"]}
                for r in reports
                if r.name == "smooth"
                for g in r.details["smoothed"]
            ],
        }
        if "fallback" in quant_reports[-1].details:
            record["fallback"] = quant_reports[-1].details["fallback"]
            record["fallback"]["eval_data"] = eval_data or "held-back calibration samples"
        if calibration is not None:
            record.update(
                calibration={
                    "method": method,
                    "samples": calibration.samples,
                    "seq_len": seq_len,
                    "data": calib_data or "embedded corpus (calib/en.txt)",
                }
            )
        progress("save", 0, 0)
        with claim.staged() as tmp:
            model_files.save(model, tmp)
            model_files.copy_sidecars(ref.folder, tmp)
            manifest = ref.derived_manifest(model)
            manifest.add_step(f"quantize-{mode}", **record)
            manifest.save(tmp)
            verified = verify_staged(verify_loading, tmp, ref.folder, out)
        return QuantizeResult(
            out=out,
            mode=mode,
            steps=reports,
            calibration=calibration,
            size_before=ref.size_bytes(),
            size_after=model_files.resolve(out).size_bytes(),
            seconds=time.perf_counter() - start,
            cpu=features.describe(),
            options=record,
            verified=verified,
        )


def _check_excluded(model, exclude: tuple[str, ...]) -> None:
    names = [n.name for n in model.graph.node]
    for name in exclude:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = (
                f"did you mean: {', '.join(close)}" if close else "run `onnxopt inspect --nodes` to list them"
            )
            raise OnnxoptError(f"--exclude names node {name!r}, which the (fused) graph does not have", hint)
