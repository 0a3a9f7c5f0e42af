"""Hugging Face model -> ONNX folder, by optimum-onnx's exporter, checked against PyTorch."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt import memory
from onnxopt.data.samples import input_types
from onnxopt.errors import OnnxoptError, first_line
from onnxopt.evaluate.verify import verify_staged
from onnxopt.export.config import ExportConfig
from onnxopt.export.large_export import (
    EXTERNAL_FROM_BYTES,
    LARGE_EXPORT_BYTES,
    LARGE_EXPORT_NOTE,
    bounded_export,
)
from onnxopt.export.seq2seq_check import compare_seq2seq
from onnxopt.export.sources import check_source, infer_task, read_gguf, resolve_source
from onnxopt.export.torch_check import MIN_AGREEMENT, compare_with_torch
from onnxopt.io import model_files, parts, saving
from onnxopt.io.external_data import consolidate, externalize, safetensors_parameters
from onnxopt.io.genai_config import write_genai_config
from onnxopt.io.leftovers import temp_dir
from onnxopt.io.manifest import Manifest
from onnxopt.io.model_info import ModelInfo
from onnxopt.io.outputs import claim_output
from onnxopt.options import config_from
from onnxopt.silence import native_stdout_silenced, quiet

Progress = Callable[[str, int, int], None]


@dataclass
class ExportResult:
    out: Path
    source: str
    task: str
    opset: int
    max_abs_diff: dict[str, float]
    atol: float
    seconds: float
    size_bytes: int
    notes: list[str] = field(default_factory=list)
    verified: object = None  # VerifyResult, when --verify-loading ran (in the staged folder)


def export(
    model: str | None,
    out: Path,
    config: ExportConfig | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    **options,
) -> ExportResult:
    """Export `model` (a local folder, a GGUF file, a hub id, or None for a bundled model) into `out`."""
    config = config_from(ExportConfig, config, options)
    progress = on_progress or (lambda _stage, _done, _total: None)
    source = resolve_source(model, config.bundled)
    start = time.perf_counter()
    with claim_output(out, source.inputs, overwrite) as claim, _hf_folder(source, progress) as hf:
        if source.is_local:
            progress(f"checking {source.shown}", 0, 0)
            check_source(Path(hf))
        task = infer_task(hf, source.is_local, config.cache) if config.task == "auto" else config.task
        with claim.staged() as tmp:
            progress(f"exporting {source.shown} ({task})", 0, 0)
            with native_stdout_silenced():  # torch's C++ prints would reach stdout (`--json -`)
                diffs, opset, notes = _export_checked(hf, tmp, task, config, progress)
            write_genai_config(tmp)  # what onnxruntime-genai reads to serve a decoder folder
            manifest = Manifest(source=model or source.shown, task=task, opset=opset)
            if ModelInfo.read(tmp).in_parts:
                manifest.parts = parts.default_parts()
            record = {
                "source": str(source.gguf or source.path),
                "task": task,
                "opset": opset,
                "max_abs_diff": diffs,
                "dtype": config.dtype,
                "peak_rss_mb": memory.run_peak_mb(),  # export and check: what bounds a large model
            }
            manifest.add_step("export", **record, atol=check_tolerance(config), checks=notes)
            manifest.save(tmp)
            verified = verify_staged(config.verify_loading, tmp, None, out)
        size = model_files.folder_size(out)
        seconds = time.perf_counter() - start
        return ExportResult(
            out, source.shown, task, opset, diffs, check_tolerance(config), seconds, size, notes, verified
        )


@contextlib.contextmanager
def _hf_folder(source, progress) -> Iterator[str]:
    """The Hugging Face folder or hub id optimum exports from: a GGUF file is read into a temporary
    folder first (dequantized to fp32), removed when the export ends."""
    if source.gguf is None:
        yield source.path
        return
    with temp_dir("gguf") as folder:
        progress(f"reading {source.shown}", 0, 0)
        read_gguf(source.gguf, Path(folder))
        yield folder


def _export_checked(
    source: str, tmp: Path, task: str, config: ExportConfig, progress
) -> tuple[dict, int, list]:
    """Run optimum's exporter into `tmp` and compare with PyTorch; outside the tolerance nothing is
    kept. An encoder-decoder with its cache is kept in parts (onnxopt.io.parts), not merged."""
    in_parts = task == "text2text-generation-with-past"
    large = not in_parts and _weight_bytes(source, config.dtype) >= LARGE_EXPORT_BYTES
    shown = Path(source).name or source
    streams = (sys.stdout, sys.stderr)  # the exporter runs quieted; its progress must still show

    def on_layer(done: int, total: int) -> None:
        with contextlib.redirect_stdout(streams[0]), contextlib.redirect_stderr(streams[1]):
            progress(f"tracing {shown}'s layers", done, total)

    _run_exporter(source, tmp, task, config, not in_parts, large, on_layer)
    memory.release()  # the exporter's PyTorch model, before the check loads another
    files = list(parts.part_files(tmp).values()) if in_parts else [model_files.resolve(tmp).onnx_path]
    for path in files:
        if large:
            consolidate(path)  # torch's per-tensor files, were weights_beside not to apply
        elif path.stat().st_size >= EXTERNAL_FROM_BYTES:
            progress("moving the weights into model.onnx.data", 0, 0)
            externalize(path)
        # The graph alone: weights stay on disk (a 1B model's would be 4 GB more, for an opset).
        onnx_model = model_files.load(model_files.ModelRef(path, tmp), load_weights=False)
        opset = model_files.main_opset(onnx_model)
        if onnx_model.ir_version != saving.loadable_ir_version(onnx_model):
            saving.save(onnx_model, tmp, path.name)
        types = input_types(onnx_model) if not in_parts else None
        del onnx_model
    progress("checking outputs against PyTorch", 0, 0)
    if in_parts:
        check = compare_seq2seq(source, tmp, task, config.trust_remote_code)
    else:
        check = compare_with_torch(source, tmp, task, types, config.trust_remote_code, config.dtype)
    worst = max(check.relative.values()) if check.relative else max(check.diffs.values())
    atol = check_tolerance(config)
    if not worst <= atol:  # also catches NaN
        kind = "relative to the outputs' scale " if check.relative else ""
        raise OnnxoptError(
            f"exported outputs differ from PyTorch by {worst:.2e} {kind}above --atol {atol:g}",
            "raise --atol if this is expected, or try another --opset",
        )
    if check.agreement is not None and check.agreement < MIN_AGREEMENT:
        raise OnnxoptError(
            f"greedy generation agrees with PyTorch on {100 * check.agreement:.1f}% of tokens only",
            "the export does not generate as the model does; try another --opset",
        )
    if large:
        check.notes.append(LARGE_EXPORT_NOTE)
    return check.diffs, opset, check.notes


# fp16 keeps 11 significant bits: onnxruntime's and PyTorch's fp16 kernels round differently, so
# the check's tolerance is at least this (relative to the logits' scale for decoders).
FP16_ATOL = 1e-2


def check_tolerance(config: ExportConfig) -> float:
    return max(config.atol, FP16_ATOL) if config.dtype == "fp16" else config.atol


def _weight_bytes(source: str, dtype: str) -> int:
    """The exported weights' size, from the checkpoint's headers (0 when unknown: a hub id)."""
    count = safetensors_parameters(Path(source)) if Path(source).is_dir() else None
    return (2 if dtype == "fp16" else 4) * (count or 0)


def _run_exporter(
    source: str, out: Path, task: str, config: ExportConfig, merged=True, large=False, on_layer=None
) -> None:
    """optimum's main_export; `merged` False keeps an encoder-decoder's decoders apart (optimum
    merges them in its post-processing, which also deduplicates tied weights). A `large` model's
    weights are written into model.onnx.data as torch's exporter meets them (large_export.py)."""
    from optimum.exporters.onnx import main_export

    try:
        with quiet(), bounded_export(on_layer) if large else contextlib.nullcontext():
            main_export(
                source,
                output=out,
                task=task,
                opset=config.opset,
                dtype=config.dtype,
                do_validation=False,
                library_name="transformers",
                trust_remote_code=config.trust_remote_code,
                no_post_process=large or not merged,
            )
    except KeyError as exc:
        raise OnnxoptError(
            f"optimum cannot export task {task!r} for this model: {exc}",
            "pass a supported --task, e.g. feature-extraction",
        ) from exc
    except (ValueError, OSError, RuntimeError) as exc:
        if "custom code" in str(exc) and not config.trust_remote_code:
            raise OnnxoptError(
                f"{source} ships its own model code, which would run on this machine; it was not run",
                "read the code first; pass --trust-remote-code only if you trust it",
            ) from exc
        raise OnnxoptError(
            f"export failed: {first_line(exc, 200)}", "check the model and --task/--opset values"
        ) from exc
