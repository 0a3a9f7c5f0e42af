"""The one place onnxopt opens a Hugging Face config.json (tests/io/test_model_info.py checks it).

Callers ask onnxopt.io.model_info.ModelInfo (`info.config`, `info.model_type`, `info.task`, ...),
which reads it here once per model. This module sits below onnxopt.io.model_files, so
genai_config (which model_files calls) reads it here too, without an import circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxopt.io.files import read_json

CONFIG = "config.json"


def read_config(folder: Path | None) -> dict[str, Any]:
    """config.json of a model folder ({} when there is none), checked to be a JSON object: a regular
    file inside the folder, of bounded size (onnxopt.io.files.read_json)."""
    if folder is None:
        return {}
    return read_json(folder, CONFIG) or {}


def auto_config(folder: Path) -> Any:
    """transformers' AutoConfig of the folder, for what only it derives (rope initialisers)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder))


# Tasks whose models generate: exported with their KV cache by default (`-with-past`), since
# generation is what they are for; without it every token recomputes the whole prefix.
GENERATIVE_TASKS = ("text-generation", "text2text-generation")


def with_cache(task: str, cache: bool) -> str:
    """The task to export: a generative one with `-with-past` when `cache`, without it otherwise."""
    base = task.removesuffix("-with-past")
    return f"{base}-with-past" if cache and base in GENERATIVE_TASKS else base
