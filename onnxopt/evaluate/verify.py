"""`--verify-loading`: the output folder loads with optimum's `ORTModelFor<Task>.from_pretrained`
and runs a sample, and its outputs are compared with the input model's on the same sample; a
generative model (a decoder with its cache, an encoder-decoder in parts) also generates greedily
through optimum's `generate()`, and its tokens are compared with the input model's.

This is how users serve the result (optimum pipelines), so a folder that onnxruntime alone can run
but optimum cannot load (a missing config, an input it does not expect) is caught here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError
from onnxopt.evaluate import verify_models
from onnxopt.evaluate.verify_models import GENERATIVE, MODEL_CLASSES, Ran
from onnxopt.io.manifest import Manifest
from onnxopt.io.model_info import ModelInfo
from onnxopt.runtime.similarity import cosine

__all__ = ["MODEL_CLASSES", "VerifyResult", "verify_loading", "verify_staged"]
# Below this cosine the output is broken, not merely quantized or pruned.
MIN_COSINE = 0.9
# The share of prompts whose first greedy token must equal the input model's.
MIN_FIRST_TOKENS = 0.5


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
    top1_agreement: float | None = None  # share of real positions with the input model's argmax
    generated: int | None = None  # greedy tokens generate() wrote (prompts x new tokens)
    greedy_agreement: float | None = None  # share of them equal to the input model's


def _run(folder: Path, task: str, shown: Path) -> tuple[Ran, list | None]:
    """The sample's main output, and the greedy tokens of a generative model (None otherwise)."""
    loaded = verify_models.load(folder, task, shown)
    ran = verify_models.run_sample(loaded, shown)
    tokens = verify_models.greedy(loaded, shown) if loaded.name in GENERATIVE else None
    return ran, tokens


def _task(folder: Path) -> str:
    manifest = Manifest.load(folder)
    if manifest is None or manifest.task in ("", "unknown"):
        if not (folder / "config.json").is_file():
            raise OnnxoptError(
                f"--verify-loading needs a model folder with config.json; {folder} has none",
                "run it on folders made by `onnxopt export` and the commands after it",
            )
        return ModelInfo.read(folder).task.removesuffix("-with-past")
    return manifest.task.removesuffix("-with-past")


def verify_loading(folder: Path, reference: Path | None = None, shown_as: Path | None = None) -> VerifyResult:
    """Load `folder` with optimum, run the sample, and compare with `reference` (the command's input
    folder) run the same way. The workflows call it on their staged folder, before it replaces
    OUT, so a failing output never costs the previous one; `shown_as` is the name users see."""
    start = time.perf_counter()
    shown = shown_as or folder
    task = _task(folder)
    got, tokens = _run(folder, task, shown)
    if not np.isfinite(got.values).all():
        raise OnnxoptError(f"{shown}: {got.name} produced non-finite {got.key}", "the model is broken")
    result = VerifyResult(str(shown), got.name, got.key, tuple(got.values.shape), None, None, None, 0.0)
    result.generated = sum(len(t) for t in tokens) if tokens is not None else None
    if reference is not None and reference.is_dir():
        want, reference_tokens = _run(reference, task, reference)
        _compare(result, got, want, shown)
        result.reference = str(reference)
        if tokens is not None and reference_tokens is not None:
            _compare_generation(result, tokens, reference_tokens, shown)
    result.seconds = time.perf_counter() - start
    return result


def _compare(result: VerifyResult, got: Ran, want: Ran, shown: Path) -> None:
    """Cosine, max abs difference and top-1 agreement of the main output over the real tokens."""
    if want.values.shape != got.values.shape:
        raise OnnxoptError(
            f"{shown}: {got.key} has shape {got.values.shape}, the input model's {want.values.shape}",
            "the optimized model no longer computes the same thing",
        )
    cosines, diffs, same, positions = [], [], 0, 0
    for i in range(len(got.values)):
        # Padding positions carry no meaning (every layer masks them), so only real tokens count.
        g, w = got.values[i], want.values[i]
        if g.ndim >= 1 and g.shape[0] == got.mask.shape[1]:
            g, w = g[got.mask[i]], w[got.mask[i]]
        if got.key == "logits" and g.ndim >= 1:
            same += int((g.argmax(-1) == w.argmax(-1)).sum())
            positions += int(np.prod(g.shape[:-1]))
        g, w = g.ravel(), w.ravel()
        cosines.append(cosine(g, w))
        diffs.append(float(np.max(np.abs(g - w))) if g.size else 0.0)
    result.min_cosine, result.max_abs_diff = min(cosines), max(diffs)
    result.top1_agreement = same / positions if positions else None
    if result.min_cosine < MIN_COSINE:
        raise OnnxoptError(
            f"{shown}: {got.key} differs from the input model's "
            f"(cosine {result.min_cosine:.4f} < {MIN_COSINE})",
            "the output is broken, not merely approximated; try --no-optimize or a milder setting",
        )


def _compare_generation(result: VerifyResult, tokens: list, reference_tokens: list, shown: Path) -> None:
    """Greedy agreement over every token; the first token of each prompt (the argmax after the
    prompt, not yet steered by earlier choices) must match on most prompts, or the model is broken."""
    pairs = list(zip(tokens, reference_tokens, strict=True))
    equal = sum(int((a == b).sum()) for a, b in pairs)
    result.greedy_agreement = equal / max(result.generated or 0, 1)
    first = sum(int(a[0] == b[0]) for a, b in pairs)
    if first < MIN_FIRST_TOKENS * len(pairs):
        raise OnnxoptError(
            f"{shown}: generate()'s first token equals the input model's on {first} of {len(pairs)} "
            f"prompts only (greedy agreement {100 * result.greedy_agreement:.1f}%)",
            "the model no longer generates as its input did; try --no-optimize or a milder setting",
        )


def verify_staged(asked: bool, staged: Path, reference: Path | None, out: Path) -> VerifyResult | None:
    """--verify-loading on a workflow's staged folder, before it replaces OUT: a failure leaves
    the previous OUT as it was, and the staged folder is removed with the rest of the run."""
    return verify_loading(staged, reference, shown_as=out) if asked else None
