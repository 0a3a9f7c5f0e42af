"""`--verify-loading`: the output folder loads with optimum's `ORTModelFor<Task>.from_pretrained`
and runs a sample, and its outputs are compared with the input model's on the same sample.

This is how users serve the result (optimum pipelines), so a folder that onnxruntime alone can run
but optimum cannot load (a missing config, an input it does not expect) is caught here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError, first_line
from onnxopt.io.manifest import Manifest

MODEL_CLASSES = {  # the task recorded at export -> optimum's class for it
    "feature-extraction": "ORTModelForFeatureExtraction",
    "sentence-similarity": "ORTModelForFeatureExtraction",
    "text-classification": "ORTModelForSequenceClassification",
    "question-answering": "ORTModelForQuestionAnswering",
    "text-generation": "ORTModelForCausalLM",
}
_MAIN_OUTPUT = ("last_hidden_state", "logits", "start_logits")
_SAMPLE = ["onnxopt checks that the optimized folder loads with optimum.", "A second sentence."]
# Below this cosine the output is broken, not merely quantized or pruned.
MIN_COSINE = 0.9


@dataclass
class VerifyResult:
    folder: str
    model_class: str
    output: str
    shape: tuple[int, ...]
    reference: str | None
    min_cosine: float | None
    max_abs_diff: float | None
    seconds: float


def _run(folder: Path, task: str, shown: Path) -> tuple[str, str, np.ndarray, np.ndarray]:
    import optimum.onnxruntime as ort_models
    from transformers import AutoTokenizer

    name = MODEL_CLASSES.get(task)
    if name is None:
        raise OnnxoptError(
            f"--verify-loading knows no optimum class for task {task!r}", f"known: {', '.join(MODEL_CLASSES)}"
        )
    model_class = getattr(ort_models, name)
    kwargs = {"use_cache": False, "use_io_binding": False} if name == "ORTModelForCausalLM" else {}
    try:
        model = model_class.from_pretrained(
            folder, provider="CPUExecutionProvider", trust_remote_code=False, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        encoded = tokenizer(_SAMPLE, padding=True, return_tensors="pt")
        outputs = model(**encoded)
    except OnnxoptError:
        raise
    except Exception as exc:
        first = first_line(exc, 200)
        raise OnnxoptError(
            f"{name}.from_pretrained({shown}) failed: {first}",
            "the folder needs model.onnx with its config.json and tokenizer files",
        ) from exc
    key = next((k for k in _MAIN_OUTPUT if getattr(outputs, k, None) is not None), None)
    if key is None:
        raise OnnxoptError(f"{name} on {shown} returned none of {_MAIN_OUTPUT}", "check the export task")
    mask = encoded["attention_mask"].numpy().astype(bool)
    return name, key, np.asarray(getattr(outputs, key).detach().numpy(), np.float64), mask


def _task(folder: Path) -> str:
    manifest = Manifest.load(folder)
    if manifest is None or manifest.task in ("", "unknown"):
        from onnxopt.io.hf_config import task_from_config

        if not (folder / "config.json").is_file():
            raise OnnxoptError(
                f"--verify-loading needs a model folder with config.json; {folder} has none",
                "run it on folders made by `onnxopt export` and the commands after it",
            )
        return task_from_config(folder).removesuffix("-with-past")
    return manifest.task.removesuffix("-with-past")


def verify_loading(folder: Path, reference: Path | None = None, shown_as: Path | None = None) -> VerifyResult:
    """Load `folder` with optimum, run the sample, and compare with `reference` (the command's input
    folder) run the same way. The workflows call it on their staged folder, before it replaces
    OUT, so a failing output never costs the previous one; `shown_as` is the name users see."""
    start = time.perf_counter()
    shown = shown_as or folder
    task = _task(folder)
    name, key, got, mask = _run(folder, task, shown)
    if not np.isfinite(got).all():
        raise OnnxoptError(f"{shown}: {name} produced non-finite {key}", "the model is broken")
    result = VerifyResult(str(shown), name, key, tuple(got.shape), None, None, None, 0.0)
    if reference is not None and reference.is_dir():
        _n, _k, want, _m = _run(reference, task, reference)
        if want.shape != got.shape:
            raise OnnxoptError(
                f"{shown}: {key} has shape {got.shape}, the input model's {want.shape}",
                "the optimized model no longer computes the same thing",
            )
        cosines, diffs = [], []
        for i in range(len(got)):
            # Padding positions carry no meaning (every layer masks them), so only real tokens count.
            g, w = got[i], want[i]
            if g.ndim >= 1 and g.shape[0] == mask.shape[1]:
                g, w = g[mask[i]], w[mask[i]]
            g, w = g.ravel(), w.ravel()
            cosines.append(float(g @ w / max(np.linalg.norm(g) * np.linalg.norm(w), 1e-30)))
            diffs.append(float(np.max(np.abs(g - w))) if g.size else 0.0)
        result.reference = str(reference)
        result.min_cosine = min(cosines)
        result.max_abs_diff = max(diffs)
        if result.min_cosine < MIN_COSINE:
            raise OnnxoptError(
                f"{shown}: {key} differs from the input model's "
                f"(cosine {result.min_cosine:.4f} < {MIN_COSINE})",
                "the output is broken, not merely approximated; try --no-optimize or a milder setting",
            )
    result.seconds = time.perf_counter() - start
    return result


def verify_staged(asked: bool, staged: Path, reference: Path | None, out: Path) -> VerifyResult | None:
    """--verify-loading on a workflow's staged folder, before it replaces OUT: a failure leaves
    the previous OUT as it was, and the staged folder is removed with the rest of the run."""
    return verify_loading(staged, reference, shown_as=out) if asked else None
