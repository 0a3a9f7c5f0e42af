"""Output fidelity: a model's first output against a reference's on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.runtime.sessions import make_session
from onnxopt.runtime.similarity import cosine


@dataclass
class Fidelity:
    samples: int
    mean_cosine: float
    min_cosine: float
    max_abs_diff: float


def output_fidelity(model: Path, reference: Path, feeds, settings: tuple = (None, None)) -> Fidelity:
    """Compare the first output of two models on the same inputs: cosine per sample, max abs difference.
    `settings`: how to run the model and the reference (default: the CPU provider)."""
    refs = [model_files.resolve(model), model_files.resolve(reference)]
    sessions = [make_session(r.onnx_path, "cpu", settings=s) for r, s in zip(refs, settings, strict=True)]
    cosines, worst, count = [], 0.0, 0
    for feed in feeds:
        got, want = (s.run(None, feed)[0].astype(np.float64) for s in sessions)
        if got.shape != want.shape:
            raise OnnxoptError(
                f"{refs[0].name} and {refs[1].name} give outputs of different shapes "
                f"{got.shape} vs {want.shape}",
                "compare a model with the one it was made from",
            )
        a, b = got.ravel(), want.ravel()
        cosines.append(cosine(a, b))
        worst = max(worst, float(np.max(np.abs(a - b))))
        count += 1
    if not count:
        raise OnnxoptError("no samples to compare", "give --limit above 0, or a non-empty --data file")
    return Fidelity(count, float(np.mean(cosines)), float(np.min(cosines)), worst)
