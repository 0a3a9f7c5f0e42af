"""What `--verify-loading` runs: a folder loaded with optimum's `ORTModelFor<Task>` as users serve
it, one forward pass on a sample, and for generative models greedy `generate()` on a few prompts.

Decoders exported with their cache load with `use_cache=True` (what generation reads);
encoder-decoders load from their separate parts (`use_merged=False`: onnxopt keeps the encoder,
the first decoder step and the decoder with past as three files, see onnxopt.io.parts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError, first_line
from onnxopt.io.model_info import ModelInfo

MODEL_CLASSES = {  # the task recorded at export -> optimum's class for it
    "feature-extraction": "ORTModelForFeatureExtraction",
    "sentence-similarity": "ORTModelForFeatureExtraction",
    "text-classification": "ORTModelForSequenceClassification",
    "question-answering": "ORTModelForQuestionAnswering",
    "fill-mask": "ORTModelForMaskedLM",
    "text-generation": "ORTModelForCausalLM",
    "text2text-generation": "ORTModelForSeq2SeqLM",
}
GENERATIVE = ("ORTModelForCausalLM", "ORTModelForSeq2SeqLM")
MAIN_OUTPUTS = ("last_hidden_state", "logits", "start_logits")
SAMPLE = ["onnxopt checks that the optimized folder loads with optimum.", "A second sentence."]
# Greedy generate() is compared on these prompts, VERIFY_TOKENS new tokens each.
VERIFY_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "Water boils at a temperature of",
    "A good cup of coffee needs",
]
VERIFY_TOKENS = 16


@dataclass
class Loaded:
    name: str  # optimum's class
    model: object
    tokenizer: object


@dataclass
class Ran:
    """The main output of the sample (float64) and its attention mask."""

    name: str
    key: str
    values: np.ndarray
    mask: np.ndarray


def _kwargs(name: str, folder: Path) -> dict:
    info = ModelInfo.read(folder)
    if name == "ORTModelForCausalLM":
        return {"use_cache": info.has_cache, "use_io_binding": False}
    if name == "ORTModelForSeq2SeqLM":
        files = {f"{part}_file_name": path.name for part, path in (info.parts or {}).items()}
        return {"use_cache": True, "use_merged": False, "use_io_binding": False, **files}
    return {}


def load(folder: Path, task: str, shown: Path) -> Loaded:
    """The folder through optimum's class for `task`, with its tokenizer."""
    import optimum.onnxruntime as ort_models
    from transformers import AutoTokenizer

    name = MODEL_CLASSES.get(task)
    if name is None:
        raise OnnxoptError(
            f"--verify-loading knows no optimum class for task {task!r}", f"known: {', '.join(MODEL_CLASSES)}"
        )
    try:
        model = getattr(ort_models, name).from_pretrained(
            folder, provider="CPUExecutionProvider", trust_remote_code=False, **_kwargs(name, folder)
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except OnnxoptError:
        raise
    except Exception as exc:
        raise OnnxoptError(
            f"{name}.from_pretrained({shown}) failed: {first_line(exc, 200)}",
            "the folder needs its .onnx files with their config.json and tokenizer files",
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(name, model, tokenizer)


def run_sample(loaded: Loaded, shown: Path) -> Ran:
    """One forward pass on SAMPLE; an encoder-decoder runs its first decoder step."""
    import torch

    encoded = loaded.tokenizer(SAMPLE, padding=True, return_tensors="pt")
    try:
        if loaded.name == "ORTModelForSeq2SeqLM":
            start = loaded.model.config.decoder_start_token_id or 0
            encoded["decoder_input_ids"] = torch.full((len(SAMPLE), 1), start, dtype=torch.long)
        outputs = loaded.model(**encoded)
    except Exception as exc:
        raise OnnxoptError(
            f"{loaded.name} loaded {shown} but failed on a sample: {first_line(exc, 200)}",
            "the folder's graphs do not take what optimum feeds them; export the model again",
        ) from exc
    key = next((k for k in MAIN_OUTPUTS if getattr(outputs, k, None) is not None), None)
    if key is None:
        raise OnnxoptError(
            f"{loaded.name} on {shown} returned none of {MAIN_OUTPUTS}", "check the export task"
        )
    mask = encoded["attention_mask"].numpy().astype(bool)
    return Ran(loaded.name, key, np.asarray(getattr(outputs, key).detach().numpy(), np.float64), mask)


def greedy(loaded: Loaded, shown: Path) -> list[np.ndarray]:
    """VERIFY_TOKENS greedy tokens after each of VERIFY_PROMPTS, through optimum's generate()."""
    import torch

    found = []
    for prompt in VERIFY_PROMPTS:
        encoded = loaded.tokenizer(prompt, return_tensors="pt")
        encoded = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        try:
            with torch.no_grad():
                ids = loaded.model.generate(
                    **encoded,
                    max_new_tokens=VERIFY_TOKENS,
                    min_new_tokens=VERIFY_TOKENS,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=loaded.tokenizer.pad_token_id,
                )
        except Exception as exc:
            raise OnnxoptError(
                f"{loaded.name}.generate() on {shown} failed: {first_line(exc, 200)}",
                "the folder loads but does not generate; export the model again with its cache",
            ) from exc
        found.append(ids[0, -VERIFY_TOKENS:].numpy())
    return found
