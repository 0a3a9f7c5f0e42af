"""Activation statistics for static quantization, collected streaming.

onnxruntime's `quantize_static` hands the whole reader to its calibrator in one call, which keeps
every intermediate output of every sample in memory before reducing (histogram methods), and its
`CalibMaxIntermediateOutputs` escape hatch drops collected outputs instead of merging them. Here
each sample goes through the calibrator on its own and is reduced into running min/max or
histograms at once, so peak memory does not grow with the number of samples.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import OnnxoptError
from .passes._files import quiet, write_temp_model

METHODS = ("minmax", "entropy", "percentile")


@dataclass
class CalibrationResult:
    ranges: object  # onnxruntime TensorsData
    method: object  # onnxruntime CalibrationMethod
    samples: int
    seconds: float
    peak_rss_mb: float


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
    with tempfile.TemporaryDirectory(prefix="onnxopt-calib-") as tmp:
        path = write_temp_model(model, Path(tmp))
        with quiet():
            calibrator = create_calibrator(
                path,
                op_types,
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=calibration_method,
                providers=["CPUExecutionProvider"],
                use_external_data_format=model.ByteSize() >= 2**31,
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
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return CalibrationResult(ranges, calibration_method, count, time.perf_counter() - start, peak_kb / 1024)
