"""The calibration batches run through the model being pruned, one block further per re-fit.

Each re-fit probes the model with every block below it already folded. Probing from the model's
inputs ran the text through all the layers below each block, work growing with the square of the
depth: on the Qwen2.5-0.5B shape (24 layers, 48 re-fits) that was 17 of prune's 17 minutes.
Here each probe starts from values cached at the boundary of the last folded block (the residual
stream and what every layer reads: rotary tables, masks), computed by the previous probe on the
model as it then was, and caches the next boundary's on its way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from onnxopt.graph_queries.cut_points import frontier, same_nodes_below
from onnxopt.prune.refit import PrefillProbe


class RefitStream:
    """`spill`: a folder the cached values are written to, batch by batch, and read back from
    when fed: memory holds one batch whatever the calibration text (a 3B shape's residual stream
    over 5,000 samples of 512 tokens would be 30 GB)."""

    def __init__(self, batches: list, spill: Path):
        self.batches, self.spill = batches, spill
        self.cached: dict[str, list[Path]] = {}  # tensor -> the file of its value, per batch
        self.types: dict[str, int] = {}  # tensor -> its onnx element type
        self.boundary: str | None = None
        self.restarts = 0  # probes that had to start from the inputs again (see `folded`)
        self.written = 0  # files written so far: each probe's names its files apart

    def folded(self, before: onnx.ModelProto, after: onnx.ModelProto, boundary: str) -> None:
        """`after` is `before` with one more block folded, ending in the tensor `boundary` (the
        block's output, or its sum with the skip connection)."""
        self.boundary = boundary
        # Cached values stay valid only if the fold changed nothing they are computed from; true of
        # a stack of layers folded bottom up, checked rather than assumed.
        if self.cached and not same_nodes_below(before.graph, after.graph, list(self.cached)):
            self._forget(set(self.cached))
            self.restarts += 1

    def probe(self, model: onnx.ModelProto, names: list[str], later: list[str]) -> Iterator[tuple]:
        """Per batch, the values of `names` on `model` and the batch's real-token mask. `later`:
        every tensor this and later re-fits will probe, which the next cache must serve."""
        cut = frontier(model.graph, self.boundary, later) if self.boundary else []
        new = [t for t in cut if t not in self.cached]
        outputs = names + [t for t in new if t not in names]
        probe = PrefillProbe(model, outputs, cut={t: self.types[t] for t in self.cached})
        fresh: dict[str, list[Path]] = {t: [] for t in new}
        for k, (feed, real) in enumerate(self.batches):
            values = probe.run(outputs, {**feed, **{t: np.load(f[k]) for t, f in self.cached.items()}})
            by_name = dict(zip(outputs, values, strict=True))
            for t in new:
                fresh[t].append(self._write(by_name[t]))
                self.types[t] = onnx.helper.np_dtype_to_tensor_dtype(by_name[t].dtype)
            yield values[: len(names)], real
        self._forget(set(self.cached) - set(cut))
        self.cached = {t: fresh[t] if t in fresh else self.cached[t] for t in cut}

    def _write(self, value: np.ndarray) -> Path:
        path = self.spill / f"{self.written}.npy"
        self.written += 1
        np.save(path, value)
        return path

    def _forget(self, tensors: set[str]) -> None:
        for t in tensors:
            for path in self.cached.pop(t):
                path.unlink(missing_ok=True)
