"""Cosine similarity of two outputs, written once: the evaluation's fidelity and --verify checks,
the accuracy search's fidelity drop, and the provider comparison of `bench --ep` read it here.

`cosine` takes the two arrays flat, in the dtype the caller gives (verify compares the session's
own float32, the others cast to float64 first); the 1e-30 floor makes an all-zero side give
cosine 0 rather than a division by zero.

`row_cosines` is the provider comparison's: one cosine per row (a batch item), summed with
np.sum rather than a dot product, and a row whose norm is zero on either side counts as agreeing
(1.0), since a provider that gives an empty or all-zero item where the CPU gives the same is not
drifting. The figures it gives are recorded in benchmarks' JSON, so its arithmetic stays as is.
"""

from __future__ import annotations

import numpy as np

NORM_FLOOR = 1e-30


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), NORM_FLOOR))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of two (rows, n) arrays."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, NORM_FLOOR), 1.0)
