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


def decoder_start_token(folder: Path | None) -> int:
    """The token an encoder-decoder's decoder starts from (T5: pad 0; BART: eos 2)."""
    config = read_config(folder)
    for key in ("decoder_start_token_id", "pad_token_id"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def end_token(folder: Path | None) -> int | None:
    """The end-of-text token (config.json's eos_token_id; the first of a list), None without one."""
    value = read_config(folder).get("eos_token_id")
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
