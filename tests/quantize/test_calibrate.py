"""Streaming calibration must give the ranges onnxruntime's one-shot calibrator gives."""

import numpy as np
import onnx
import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.io import text_graphs
from onnxopt.quantize.calibrate import collect_ranges


def _inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(3, 4)).astype(np.float32) * (i + 1)} for i in range(n)]


class _Reader:
    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def _one_shot_minmax(model, feeds, tmp_path):
    from onnxruntime.quantization.calibrate import create_calibrator

    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    calibrator = create_calibrator(path, ["MatMul"], augmented_model_path=str(tmp_path / "aug.onnx"))
    calibrator.collect_data(_Reader(feeds))
    return calibrator.compute_data()


def test_streaming_minmax_equals_one_shot(tmp_path):
    model = text_graphs.load("mlp")
    feeds = _inputs(25)
    seen = []
    streamed = collect_ranges(model, iter(feeds), "minmax", ["MatMul"], on_sample=seen.append)
    reference = _one_shot_minmax(model, feeds, tmp_path)
    assert seen == list(range(1, 26))
    assert streamed.samples == 25
    assert set(streamed.ranges.data) == set(reference.data)
    for name, value in reference.data.items():
        np.testing.assert_allclose(streamed.ranges.data[name].range_value, value.range_value, rtol=1e-6)


def test_inputs_are_consumed_lazily():
    """A generator is read one sample at a time: nothing forces the whole set into memory."""
    model = text_graphs.load("linear")
    produced = []

    def generate():
        for i, feed in enumerate(_inputs(5)):
            produced.append(i)
            yield feed

    progress = []
    collect_ranges(
        model, generate(), "minmax", ["MatMul"], on_sample=lambda n: progress.append((n, len(produced)))
    )
    assert progress == [(n, n) for n in range(1, 6)]


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_stream(method):
    result = collect_ranges(text_graphs.load("mlp"), iter(_inputs(8)), method, ["MatMul"])
    assert result.samples == 8 and result.ranges.data


def test_no_samples_is_an_error():
    with pytest.raises(OnnxoptError, match="no calibration samples"):
        collect_ranges(text_graphs.load("linear"), iter([]), "minmax", ["MatMul"])


def test_unknown_method():
    with pytest.raises(OnnxoptError, match="unknown calibration method"):
        collect_ranges(text_graphs.load("linear"), iter(_inputs(1)), "median", ["MatMul"])


def test_memory_does_not_grow_with_sample_count():
    """Peak traced memory for 60 samples stays near that for 6: activations are reduced per sample."""
    import tracemalloc

    model = text_graphs.load("mlp")
    rng = np.random.default_rng(0)

    def feeds(n):
        for _ in range(n):
            yield {"x": rng.normal(size=(4000, 4)).astype(np.float32)}  # 128 KB of activations per sample

    peaks = []
    for n in (6, 60):
        tracemalloc.start()
        collect_ranges(model, feeds(n), "percentile", ["MatMul"])
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # Holding every sample's activations (what the one-shot histogram calibrators do) adds > 15 MB here.
    assert peaks[1] < peaks[0] + 2_000_000, peaks
