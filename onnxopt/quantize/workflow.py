"""The `quantize` workflow of a one-graph model (an encoder, or a decoder with its cache): plan,
read the text, quantize the graph (graph_steps.py), save with its manifest. Encoder-decoder
folders in parts go through parts.py; `onnxopt quantize` picks (entry.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt.evaluate.verify import verify_staged
from onnxopt.io import limits, model_files, saving
from onnxopt.io.outputs import claim_output
from onnxopt.options import config_from
from onnxopt.passes import StepReport
from onnxopt.quantize.calibrate import CalibrationSummary
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.quantize.graph_steps import quantize_graph
from onnxopt.quantize.inputs import load_fp32
from onnxopt.quantize.plan import make_plan, model_kind
from onnxopt.quantize.record import run_record
from onnxopt.quantize.target_choice import quantize_auto
from onnxopt.quantize.texts import read_data
from onnxopt.runtime.cpu import cpu_features

# (stage name, done, total): total is 0 for stages without a count.
Progress = Callable[[str, int, int], None]


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
    config = config_from(QuantizeConfig, config, options)
    progress = on_progress or (lambda _stage, _done, _total: None)
    if config.target == "auto":

        def build(layout: str, to: Path) -> QuantizeResult:
            return quantize_layout(src, to, config, layout, False, progress)

        return quantize_auto(src, out, config, overwrite, progress, build)[0]
    return quantize_layout(src, out, config, config.target, overwrite, progress)


def quantize_layout(src, out, config: QuantizeConfig, layout: str, overwrite: bool, progress):
    """`quantize` laid out for one target (`layout`; config.target, or each of auto's)."""
    start = time.perf_counter()
    ref = model_files.resolve(src)
    limits.check_sequence_length(ref, config.seq_len, "--seq-len")
    inputs = [ref.folder or ref.onnx_path]
    with claim_output(out, inputs, overwrite) as claim, contextlib.ExitStack() as stack:
        model = load_fp32(ref, stack)
        features = cpu_features()
        kind = model_kind(ref)
        plan = make_plan(config, kind, features.reduce_range, ref.has_tokenizer(), layout)
        data = read_data(ref, model, plan)
        model, reports, calibration, options, exclude = quantize_graph(
            model, ref.folder, plan, data, progress
        )
        cpu = features.describe(options.activations)
        record = run_record(plan, options, reports, calibration, cpu, model, exclude)
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
