"""What a Hugging Face config.json says about a model: its type, and the task its architecture
implies (optimum infers tasks for hub ids only, so local folders are read here)."""

from __future__ import annotations

from pathlib import Path

from onnxopt.io.files import read_config


def model_type(folder: Path | None) -> str | None:
    value = read_config(folder).get("model_type")
    return value if isinstance(value, str) else None


# Architecture class suffix -> optimum task, for local folders (optimum infers tasks for hub ids only).
_ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForTokenClassification", "token-classification"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
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


# Tasks whose models generate: exported with their KV cache by default (`-with-past`), since
# generation is what they are for; without it every token recomputes the whole prefix.
GENERATIVE_TASKS = ("text-generation", "text2text-generation")


def with_cache(task: str, cache: bool) -> str:
    """The task to export: a generative one with `-with-past` when `cache`, without it otherwise."""
    base = task.removesuffix("-with-past")
    return f"{base}-with-past" if cache and base in GENERATIVE_TASKS else base
