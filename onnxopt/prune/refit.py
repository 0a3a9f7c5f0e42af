"""The statistics and re-fits of pruning, streamed over calibration batches.

Reconstruction goes layer by layer from the bottom: for each block, the partially pruned model's
kept activations are regressed (ridge, with a bias column) onto the unpruned model's block output
plus skip connection on the same tokens, so each layer also corrects the drift of the layers
below it. The statistics are Gram matrices accumulated batch by batch and target rows spilled to
disk: memory does not grow with the number of samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxopt.graph_queries.graph_index import Graph
from onnxopt.io.cache_layout import cache_layout, empty_past
from onnxopt.runtime.sessions import probe_session

# Ridge strength relative to the mean diagonal of the Gram matrix. --sparsity 0.5 on
# all-MiniLM-L6-v2, STS-B dev / train drop: 3e-3 0.27 / 1.79, 1e-2 0.17 / 1.60, 3e-2 0.17 / 1.43,
# 1e-1 0.39 / 1.58.
RIDGE = 3e-2


class PrefillProbe:
    """A probe session on `model` (only what `tensors` need) fed prompt batches: a decoder exported
    with past gets empty past tensors shaped from this graph's own cache inputs, since folding
    changes a layer's K/V head count and so the shape its past must have. `cut`: tensors fed
    instead of computed (runtime.sessions.probe_session)."""

    def __init__(self, model, tensors: list[str], cut: dict[str, int] | None = None):
        self.session = probe_session(model, tensors, only=True, cut=cut)
        self.layout = cache_layout(model)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.layout is not None:
            feed = {**feed, **empty_past(self.layout, len(feed["input_ids"]))}
        return self.session.run(names, {k: v for k, v in feed.items() if k in self.inputs})


def token_rows(value: np.ndarray) -> np.ndarray:
    return value.reshape(-1, value.shape[-1]).astype(np.float64)


def statistics(session, batches, tensors: list[str], sums: list[str], spill: Path):
    """The energy of each channel of `tensors` (the diagonal of A^T A: sums of squares) over
    calibration tokens (padding excluded), and the rows of each of `sums` written to a file under
    `spill`: both streaming. Scores read nothing else of A^T A, so the whole matrices are not
    kept: a Llama-3.2-1B shape's FFN inputs alone would take 16 x 8192^2 float64, 8.6 GB."""
    tokens = sum(int(real.sum()) for _, real in batches)
    energies: dict[str, np.ndarray] = {}
    rows_of: dict[str, np.memmap] = {}
    at = 0
    for feed, real in batches:
        values = dict(zip(tensors + sums, session.run(tensors + sums, feed), strict=True))
        for name in tensors:
            rows = token_rows(values[name])[real]
            energies[name] = energies.get(name, 0.0) + np.einsum("ij,ij->j", rows, rows)
        for name in sums:
            rows = values[name].reshape(-1, values[name].shape[-1])[real]
            if name not in rows_of:
                path = spill / f"{len(rows_of)}.f32"
                rows_of[name] = np.memmap(path, np.float32, "w+", shape=(tokens, rows.shape[1]))
            rows_of[name][at : at + len(rows)] = rows
        at += int(real.sum())
    return energies, rows_of


def target_of(g: Graph, proj) -> tuple[str, str | None]:
    """The tensor a re-fit block should reproduce, and the skip connection it is added to.

    Where the projection's output meets a skip connection (Add with a computed tensor), the
    target is that sum: the pruned block then also undoes the drift of the residual stream from
    the layers pruned below it (STS-B dev drop 3.5 -> 1.3 at --sparsity 0.5). Otherwise it is the
    projection's own output."""
    out = g.nodes[proj.bias_node].output[0] if proj.bias_node else g.nodes[proj.node].output[0]
    for user in g.consumers.get(out, []):
        if user.op_type == "Add" and len(user.input) == 2:
            other = user.input[1] if user.input[0] == out else user.input[0]
            if g.const(other) is None:
                return user.output[0], other
    return out, None


def refit(probed, target, keep: np.ndarray, bias):
    """Ridge fit of the pruned model's kept activations (plus a ones column when the projection has
    a bias) onto the unpruned model's `target` rows, less the pruned model's own skip connection,
    on the same tokens (padding excluded). `probed` yields, batch by batch, the values of the
    projection's input (and of the skip connection, when it has one) and the real-token mask."""
    with_bias = bias is not None
    k = len(keep) + with_bias
    gram = np.zeros((k, k))
    cross = np.zeros((k, target.shape[1]))
    at = 0
    for values, real in probed:
        x = token_rows(values[0])[real][:, keep]
        goal = np.asarray(target[at : at + len(x)], dtype=np.float64)
        at += len(x)
        if len(values) > 1:
            goal -= token_rows(values[1])[real]
        if with_bias:
            x = np.hstack([x, np.ones((len(x), 1))])
        gram += x.T @ x
        cross += x.T @ goal
    kept = np.arange(len(keep))  # the bias column is not shrunk
    gram[kept, kept] += RIDGE * np.mean(np.diag(gram)[kept])
    solution = np.linalg.solve(gram, cross).astype(np.float32)
    return (solution[:-1], solution[-1]) if with_bias else (solution, None)
