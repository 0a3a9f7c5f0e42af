"""Activation statistics for static quantization, collected streaming.

onnxruntime's `quantize_static` hands the whole reader to its calibrator in one call, which keeps
every intermediate output of every sample in memory before reducing (histogram methods), and its
`CalibMaxIntermediateOutputs` escape hatch drops collected outputs instead of merging them. Here
each sample goes through the calibrator on its own and is reduced into running min/max or
histograms at once, so peak memory does not grow with the number of samples.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt import memory
from onnxopt.errors import OnnxoptError
from onnxopt.io.leftovers import temp_dir
from onnxopt.io.saving import is_large
from onnxopt.io.scratch import write_temp_model
from onnxopt.silence import quiet

METHODS = ("minmax", "entropy", "percentile")


@dataclass
class CalibrationResult:
    ranges: object  # onnxruntime TensorsData
    method: object  # onnxruntime CalibrationMethod
    samples: int
    seconds: float
    peak_rss_mb: float


@dataclass
class CalibrationSummary:
    """What a quantize run reports of its calibration (CalibrationResult without the ranges)."""

    samples: int
    seconds: float
    peak_rss_mb: float
    method: str


class _OneSample:
    """onnxruntime's CalibrationDataReader protocol for a single input dict."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self._feed: dict[str, np.ndarray] | None = feed

    def get_next(self):
        feed, self._feed = self._feed, None
        return feed


def ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in table:
        raise OnnxoptError(f"unknown calibration method {method!r}", f"use one of: {', '.join(METHODS)}")
    return table[method]


def collect_ranges(
    model: onnx.ModelProto,
    inputs: Iterable[dict[str, np.ndarray]],
    method: str = "minmax",
    op_types: list[str] | None = None,
    on_sample: Callable[[int], None] | None = None,
) -> CalibrationResult:
    from onnxruntime.quantization.calibrate import create_calibrator

    calibration_method = ort_method(method)
    start = time.perf_counter()
    with temp_dir("calib") as tmp:
        path = write_temp_model(model, Path(tmp))
        with quiet():
            calibrator = create_calibrator(
                path,
                op_types,
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=calibration_method,
                providers=["CPUExecutionProvider"],
                use_external_data_format=is_large(model),
            )
        count = 0
        for feed in inputs:
            with quiet():
                calibrator.collect_data(_OneSample(feed))
            count += 1
            if on_sample is not None:
                on_sample(count)
        if count == 0:
            raise OnnxoptError(
                "no calibration samples were given", "pass --calib N with N > 0, or non-empty data"
            )
        with quiet():
            ranges = calibrator.compute_data()
        del calibrator
    peak = memory.run_peak_mb() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return CalibrationResult(ranges, calibration_method, count, time.perf_counter() - start, peak)


@dataclass
class ChannelStats:
    """Per-channel statistics of one activation (last axis = channels), plus a bounded row sample."""

    absmax: np.ndarray
    low: np.ndarray
    high: np.ndarray
    rows: np.ndarray  # at most `max_rows` token rows, sampled uniformly from the stream


def collect_channel_stats(
    model: onnx.ModelProto,
    inputs: Iterable[dict[str, np.ndarray]],
    tensors: list[str],
    max_rows: int = 512,
    seed: int = 0,
) -> dict[str, ChannelStats]:
    """Stream samples through the model with `tensors` exposed as outputs; reduce each sample at once.

    Rows are kept by reservoir sampling, so memory is bounded by `max_rows` whatever the number of
    samples: enough to simulate quantization error, never the whole activation history.
    """
    from onnxopt.runtime.sessions import probe_session

    if not tensors:
        return {}
    session = probe_session(model, tensors)
    rng = np.random.default_rng(seed)
    stats: dict[str, ChannelStats] = {}
    seen: dict[str, int] = {}
    for feed in inputs:
        values = session.run(tensors, feed)
        for name, value in zip(tensors, values, strict=True):
            flat = value.reshape(-1, value.shape[-1]).astype(np.float32)
            if name not in stats:
                stats[name] = ChannelStats(
                    np.abs(flat).max(0), flat.min(0), flat.max(0), np.empty((0, flat.shape[1]), np.float32)
                )
            s = stats[name]
            s.absmax = np.maximum(s.absmax, np.abs(flat).max(0))
            s.low, s.high = np.minimum(s.low, flat.min(0)), np.maximum(s.high, flat.max(0))
            s.rows = _reservoir(s.rows, flat, seen.get(name, 0), max_rows, rng)
            seen[name] = seen.get(name, 0) + len(flat)
    if not stats:
        raise OnnxoptError(
            "no calibration samples were given", "pass --calib N with N > 0, or non-empty data"
        )
    return stats


def _reservoir(kept: np.ndarray, new: np.ndarray, seen: int, limit: int, rng) -> np.ndarray:
    """Algorithm R over rows: every row of the stream ends up kept with equal probability."""
    room = max(limit - len(kept), 0)
    kept = np.concatenate([kept, new[:room]])
    rest = np.arange(room, len(new))
    slots = rng.integers(0, seen + rest + 1)  # one draw per further row, as the sequential loop
    hit = slots < limit
    kept[slots[hit]] = new[rest[hit]]  # repeated slots: the later row wins, as in sequence
    return kept
