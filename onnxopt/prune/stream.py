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

import numpy as np
import onnx

from onnxopt.graph_queries.cut_points import frontier, same_nodes_below
from onnxopt.prune.refit import PrefillProbe


class RefitStream:
    def __init__(self, batches: list):
        self.batches = batches
        self.cached: dict[str, list[np.ndarray]] = {}  # tensor -> its value per batch
        self.boundary: str | None = None
        self.restarts = 0  # probes that had to start from the inputs again (see `folded`)

    def folded(self, before: onnx.ModelProto, after: onnx.ModelProto, boundary: str) -> None:
        """`after` is `before` with one more block folded, ending in the tensor `boundary` (the
        block's output, or its sum with the skip connection)."""
        self.boundary = boundary
        # Cached values stay valid only if the fold changed nothing they are computed from; true of
        # a stack of layers folded bottom up, checked rather than assumed.
        if self.cached and not same_nodes_below(before.graph, after.graph, list(self.cached)):
            self.cached = {}
            self.restarts += 1

    def probe(self, model: onnx.ModelProto, names: list[str], later: list[str]) -> Iterator[tuple]:
        """Per batch, the values of `names` on `model` and the batch's real-token mask. `later`:
        every tensor this and later re-fits will probe, which the next cache must serve."""
        cut = frontier(model.graph, self.boundary, later) if self.boundary else []
        new = [t for t in cut if t not in self.cached]
        outputs = names + [t for t in new if t not in names]
        types = {t: onnx.helper.np_dtype_to_tensor_dtype(v[0].dtype) for t, v in self.cached.items()}
        probe = PrefillProbe(model, outputs, cut=types)
        fresh: dict[str, list[np.ndarray]] = {t: [] for t in new}
        for k, (feed, real) in enumerate(self.batches):
            values = probe.run(outputs, {**feed, **{t: v[k] for t, v in self.cached.items()}})
            by_name = dict(zip(outputs, values, strict=True))
            for t in new:
                fresh[t].append(by_name[t])
            yield values[: len(names)], real
        self.cached = {t: fresh[t] if t in fresh else self.cached[t] for t in cut}
