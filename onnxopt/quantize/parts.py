"""`onnxopt quantize` of an encoder-decoder in parts (onnxopt.io.parts): each part quantized by
the rules a one-graph model is (graph_steps.py, under the plan make_plan gives encoder-decoders),
calibrated on the feeds that part gets while the fp32 model generates: the encoder on each calibration text,
the first decoder step on its states, and the decoder with past on every later step, with its
real cache (onnxopt.runtime.seq2seq)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from onnxopt.data.samples import clip_text, load_tokenizer
from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate.verify import verify_staged
from onnxopt.io import model_files, saving
from onnxopt.io.outputs import claim_output
from onnxopt.io.parts import SEQ2SEQ_PARTS, part_files
from onnxopt.options import config_from
from onnxopt.quantize.calibrate import CalibrationSummary
from onnxopt.quantize.calibration_feeds import DECODE_STEPS
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.quantize.graph_steps import quantize_graph
from onnxopt.quantize.inputs import check_fp32
from onnxopt.quantize.plan import PARTS, make_plan
from onnxopt.quantize.record import run_record
from onnxopt.quantize.texts import RunData
from onnxopt.quantize.workflow import QuantizeResult
from onnxopt.runtime.cpu import cpu_features
from onnxopt.runtime.seq2seq import Seq2Seq


def quantize_parts(src: Path, out: Path, config=None, overwrite=False, on_progress=None, **options):
    """Quantize each part of the encoder-decoder at `src` into `out`; one manifest step for all."""
    config = config_from(QuantizeConfig, config, options)
    progress = on_progress or (lambda _stage, _done, _total: None)
    _refuse_unsupported(src, config)
    start = time.perf_counter()
    files = part_files(src)
    with claim_output(out, [src], overwrite) as claim:
        for path in files.values():
            ref = model_files.ModelRef(path, src)
            check_fp32(model_files.load(ref), ref.manifest, path)
        plan = make_plan(config, PARTS, cpu_features().reduce_range, True)
        feeds = _recorded_feeds(src, config, progress) if plan.calibrated or plan.smooth else None
        quantized, reports, records, calibration = {}, [], {}, None
        for part in SEQ2SEQ_PARTS:
            model = model_files.load(model_files.ModelRef(files[part], src))
            data = RunData(calibration=feeds[part] if feeds is not None else None)
            model, part_reports, used, options, excl = quantize_graph(model, src, plan, data, progress, part)
            part_reports = [replace(r, name=f"{r.name} ({part})") for r in part_reports]
            quantized[part], reports = model, reports + part_reports
            calibration = calibration or used
            records[part] = run_record(plan, options, part_reports, used, "", model, excl)
        record = _merged_record(records, config, feeds)
        progress("save", 0, 0)
        with claim.staged() as tmp:
            for part, model in quantized.items():
                saving.save(model, tmp, files[part].name)
            model_files.copy_sidecars(src, tmp)
            manifest = model_files.ModelRef(files["encoder"], src).derived_manifest(quantized["encoder"])
            manifest.parts = {part: files[part].name for part in SEQ2SEQ_PARTS}
            manifest.add_step(f"quantize-{config.mode}", **record)
            manifest.save(tmp)
            verified = verify_staged(config.verify_loading, tmp, src, out)
        summary = None
        if calibration is not None:
            summary = CalibrationSummary(
                len(feeds["encoder"]), calibration.seconds, calibration.peak_rss_mb, config.method
            )
        size_before, size_after = model_files.folder_size(src), model_files.folder_size(out)
        seconds = time.perf_counter() - start
        return QuantizeResult(
            out,
            config.mode,
            reports,
            summary,
            size_before,
            size_after,
            seconds,
            record["cpu"],
            record,
            verified,
        )


def _refuse_unsupported(src: Path, config: QuantizeConfig) -> None:
    given_flags = (
        ("--max-drop", config.max_drop is not None),
        ("--exclude", bool(config.exclude)),
        ("--target auto", config.target == "auto"),
    )
    for flag, given in given_flags:
        if given:
            raise OnnxoptError(
                f"{flag} does not work on an encoder-decoder in parts ({src}) yet",
                f"quantize it without {flag}; each part is quantized whole",
            )


def _recorded_feeds(src: Path, config: QuantizeConfig, progress) -> dict[str, list]:
    """part -> the feeds it gets while the fp32 model generates DECODE_STEPS tokens after each text."""
    tokenizer = load_tokenizer(src)
    samples = load_samples(config.calib_data, config.calib, config.text_column) if config.calib_data else None
    samples = samples or embedded_samples(config.calib, clip=True)
    runner = Seq2Seq.load(src)
    feeds: dict[str, list] = {part: [] for part in SEQ2SEQ_PARTS}
    for i, sample in enumerate(samples):
        text = clip_text(sample if isinstance(sample, str) else sample[0], config.seq_len)
        ids = tokenizer(text, truncation=True, max_length=config.seq_len, return_tensors="np")["input_ids"]
        for part, feed in runner.recorded_feeds(ids, DECODE_STEPS):
            feeds[part].append(feed)
        progress("generating calibration feeds", i + 1, len(samples))
    return feeds


def _merged_record(records: dict[str, dict], config: QuantizeConfig, feeds) -> dict:
    """One manifest record: the run's options once, what differs by part under "parts"."""
    first = records[SEQ2SEQ_PARTS[0]]
    record = {k: v for k, v in first.items() if k not in ("int8_ops", "dynamic_matmuls", "smooth")}
    record["cpu"] = cpu_features().describe()
    record["parts"] = {
        part: {k: records[part].get(k) for k in ("int8_ops", "dynamic_matmuls", "smooth")} for part in records
    }
    if feeds is not None:
        record["calibration"] = {
            "method": config.method,
            "texts": len(feeds["encoder"]),
            "feeds": {part: len(found) for part, found in feeds.items()},
            "decode_steps": DECODE_STEPS,
            "seq_len": config.seq_len,
            "data": config.calib_data or "embedded corpus (calib/en.txt)",
        }
    return record
