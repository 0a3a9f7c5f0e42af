"""Hugging Face model -> ONNX folder, by optimum-onnx's exporter, checked against PyTorch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt.data.samples import input_types
from onnxopt.errors import OnnxoptError, first_line
from onnxopt.evaluate.verify import verify_staged
from onnxopt.export.config import ExportConfig
from onnxopt.export.sources import BUNDLED_NAME, check_source, infer_task, resolve_source
from onnxopt.export.torch_check import compare_with_torch
from onnxopt.io import model_files, saving
from onnxopt.io.manifest import Manifest
from onnxopt.io.outputs import claim_output
from onnxopt.options import config_from
from onnxopt.silence import quiet

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
    """Export `model` (a local folder, a hub id, or None for the bundled MiniLM) into `out`."""
    config = config_from(ExportConfig, config, options)
    progress = on_progress or (lambda _stage, _done, _total: None)
    source, is_local = resolve_source(model)
    start = time.perf_counter()
    with claim_output(out, [Path(source)] if is_local else [], overwrite) as claim:
        if is_local:
            progress(f"checking {_shown(model, source)}", 0, 0)
            check_source(Path(source))
        task = infer_task(source, is_local) if config.task == "auto" else config.task
        with claim.staged() as tmp:
            progress(f"exporting {_shown(model, source)} ({task})", 0, 0)
            diffs, opset = _export_checked(source, tmp, task, config, progress)
            manifest = Manifest(source=model or BUNDLED_NAME, task=task, opset=opset)
            manifest.add_step(
                "export", source=source, task=task, opset=opset, max_abs_diff=diffs, atol=config.atol
            )
            manifest.save(tmp)
            verified = verify_staged(config.verify_loading, tmp, None, out)
        size = model_files.resolve(out).size_bytes()
        seconds = time.perf_counter() - start
        return ExportResult(out, source, task, opset, diffs, config.atol, seconds, size, verified=verified)


def _shown(model: str | None, source: str) -> str:
    """The bundled model by its name, not by its site-packages path."""
    return BUNDLED_NAME if model is None else source


def _export_checked(source, tmp: Path, task: str, config: ExportConfig, progress) -> tuple[dict, int]:
    """Run optimum's exporter into `tmp` and compare with PyTorch; above --atol nothing is kept."""
    _run_exporter(source, tmp, task, config.opset, config.trust_remote_code)
    ref = model_files.resolve(tmp)
    onnx_model = model_files.load(ref)
    opset = model_files.main_opset(onnx_model)
    if onnx_model.ir_version != saving.loadable_ir_version(onnx_model):
        saving.save(onnx_model, tmp)
    types = input_types(onnx_model)
    del onnx_model
    progress("checking outputs against PyTorch", 0, 0)
    diffs = compare_with_torch(source, tmp, task, types, config.trust_remote_code)
    worst = max(diffs.values())
    if not worst <= config.atol:  # also catches NaN
        raise OnnxoptError(
            f"exported outputs differ from PyTorch by {worst:.2e}, above --atol {config.atol:g}",
            "raise --atol if this is expected, or try another --opset",
        )
    return diffs, opset


def _run_exporter(source: str, out: Path, task: str, opset: int | None, trust_remote_code: bool) -> None:
    from optimum.exporters.onnx import main_export

    try:
        with quiet():
            main_export(
                source,
                output=out,
                task=task,
                opset=opset,
                do_validation=False,
                library_name="transformers",
                trust_remote_code=trust_remote_code,
            )
    except KeyError as exc:
        raise OnnxoptError(
            f"optimum cannot export task {task!r} for this model: {exc}",
            "pass a supported --task, e.g. feature-extraction",
        ) from exc
    except (ValueError, OSError, RuntimeError) as exc:
        if "custom code" in str(exc) and not trust_remote_code:
            raise OnnxoptError(
                f"{source} ships its own model code, which would run on this machine; it was not run",
                "read the code first; pass --trust-remote-code only if you trust it",
            ) from exc
        raise OnnxoptError(
            f"export failed: {first_line(exc, 200)}", "check the model and --task/--opset values"
        ) from exc
