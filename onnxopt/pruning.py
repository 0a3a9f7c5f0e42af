"""The `prune` workflow: score FFN neurons and attention heads on calibration text, keep the best
under a global budget, re-fit each pruned block's output projection, then fold (or mask).

Scores need no gradients: a unit's output energy, ||activation_j|| x ||W_out[j]||, summed over
calibration tokens (samples run in padded batches; padding rows are masked out, never counted). The budget is
global per unit type: layers whose units matter more keep more, each keeps at least the floor,
and FFN widths are rounded to multiples of 16 for the GEMM kernels.

Reconstruction goes layer by layer from the bottom: for each block, the partially pruned model's
kept activations are regressed (ridge, with a bias column) onto the unpruned block's outputs on
the same tokens, so each layer also corrects the drift of the layers below it. The statistics are
Gram matrices accumulated sample by sample: memory does not grow with the number of samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import modelio
from .datasources import embedded_samples, load_samples
from .errors import OnnxoptError
from .outputs import check_output, staged_dir
from .passes import Pipeline, StepReport
from .passes.prune_fold import FfnPlan, FoldPruned, HeadPlan, head_channels
from .passes.prune_structures import Graph, find_attention_blocks, find_ffn_blocks
from .passes.quantize import INT8_OPS
from .samples import TokenizedSamples, input_types, load_tokenizer, padded_batches
from .sessions import check_loads, probe_session

Progress = Callable[[str, int, int], None]
_FUSED = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "MultiHeadAttention", "BiasGelu")
RIDGE = 1e-2  # relative to the mean diagonal of the Gram matrix
BATCH = 16  # samples per onnxruntime call while collecting statistics


@dataclass
class LayerReport:
    kind: str  # "attention" or "ffn"
    layer: int
    units: int
    kept: int
    params_before: int
    params_after: int


@dataclass
class PruneResult:
    out: Path
    sparsity: float
    layers: list[LayerReport]
    notes: list[str]
    steps: list[StepReport]
    seconds: float
    size_before: int
    size_after: int
    mask_only: bool
    samples: int
    options: dict = field(default_factory=dict)

    @property
    def linear_params(self) -> tuple[int, int]:
        return sum(r.params_before for r in self.layers), sum(r.params_after for r in self.layers)


def prune(
    src: Path,
    out: Path,
    sparsity: float,
    calib: int = 128,
    calib_data: str | None = None,
    text_column: str | None = None,
    heads: bool = True,
    ffn: bool = True,
    mask_only: bool = False,
    floor: float = 0.25,
    seq_len: int = 128,
    overwrite: bool = False,
    on_progress: Progress | None = None,
) -> PruneResult:
    progress = on_progress or (lambda _s, _d, _t: None)
    if not 0 <= sparsity < 1 or math.isnan(sparsity):
        raise OnnxoptError(
            f"--sparsity must be in [0, 1), got {sparsity:g}", "e.g. --sparsity 0.5 removes half"
        )
    if not 0 < floor <= 1:
        raise OnnxoptError(f"--per-layer-floor must be in (0, 1], got {floor:g}", "e.g. 0.25 keeps a quarter")
    if calib < 1:
        raise OnnxoptError(f"--calib must be at least 1, got {calib}", "128 samples are a good default")
    if not (heads or ffn):
        raise OnnxoptError("nothing to prune: both --no-heads and --no-ffn", "drop one of them")
    start = time.perf_counter()
    ref = modelio.resolve(src)
    check_output(out, [ref.folder or ref.onnx_path], overwrite)
    model = modelio.load(ref)
    check_loads(ref.onnx_path)
    ops = {n.op_type for n in model.graph.node}
    if ops & set(INT8_OPS):
        raise OnnxoptError(
            f"{ref.name} is quantized", "prune the fp32 export, then quantize the pruned model"
        )
    if ops & set(_FUSED):
        raise OnnxoptError(
            f"{ref.name} is already fused ({', '.join(sorted(ops & set(_FUSED)))})",
            "prune the unfused export from `onnxopt export`; quantize fuses the pruned model afterwards",
        )
    graph = Graph(model)
    ffn_blocks = find_ffn_blocks(graph) if ffn else []
    attn_blocks, notes = find_attention_blocks(graph) if heads else ([], [])
    if not ffn_blocks and not attn_blocks:
        raise OnnxoptError(
            f"found no FFN or attention blocks to prune in {ref.name}",
            "onnxopt prunes unfused transformer exports (BERT, RoBERTa, DistilBERT, MiniLM, GPT-2)",
        )
    tokenizer = load_tokenizer(ref.folder)
    samples = load_samples(calib_data, calib, text_column) if calib_data else embedded_samples(calib)
    feeds = TokenizedSamples(samples, tokenizer, input_types(model), seq_len)

    progress("score", 0, 0)
    tensors = [b.hidden_input for b in ffn_blocks] + [b.context for b in attn_blocks]
    batches = list(padded_batches(feeds, BATCH))
    energy = _channel_energy(probe_session(model, tensors, only=True), batches, tensors)
    ffn_keep = _allocate(
        [_ffn_scores(graph, b, energy[b.hidden_input]) for b in ffn_blocks], sparsity, floor, multiple=16
    )
    head_keep = _allocate(
        [_head_scores(graph, b, energy[b.context]) for b in attn_blocks], sparsity, floor, multiple=1
    )

    # Blocks in graph order, so each re-fit sees the pruned layers below it.
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    jobs = sorted(
        [("ffn", b, k) for b, k in zip(ffn_blocks, ffn_keep, strict=True)]
        + [("attention", b, k) for b, k in zip(attn_blocks, head_keep, strict=True)],
        key=lambda job: order[(job[1].down if job[0] == "ffn" else job[1].out).node],
    )
    ffn_plans, head_plans = [], []
    for done, (kind, block, keep) in enumerate(jobs):
        progress("reconstruct", done, len(jobs))
        if kind == "ffn":
            proj, tensor, width, channels = block.down, block.hidden_input, block.width, keep
        else:
            proj, tensor, width = block.out, block.context, block.heads * block.head_dim
            channels = head_channels(keep, block.head_dim)
        weight, bias = graph.const(proj.weight), graph.const(proj.bias) if proj.bias else None
        if len(channels) < width:  # a block that keeps everything stays exactly as it was
            # The unpruned model gives the targets; the model pruned so far, the regressors.
            reference = probe_session(model, [tensor], only=True)
            current = probe_session(FoldPruned(ffn_plans, head_plans)(model).model, [tensor], only=True)
            weight, bias = _refit(reference, current, batches, tensor, channels, weight, bias)
        if kind == "ffn":
            ffn_plans.append(FfnPlan(block, channels, weight, bias))
        else:
            head_plans.append(HeadPlan(block, keep, weight, bias))
    progress("reconstruct", len(jobs), len(jobs))

    pruned, steps = Pipeline([FoldPruned(ffn_plans, head_plans, mask_only)]).run(model)
    layers = [
        _report("attention", p.block.layer, p.block.heads, len(p.keep), graph, p.block) for p in head_plans
    ]
    layers += [_report("ffn", p.block.layer, p.block.width, len(p.keep), graph, p.block) for p in ffn_plans]
    layers.sort(key=lambda r: (r.layer, r.kind))
    record = {
        "sparsity": sparsity,
        "heads": heads,
        "ffn": ffn,
        "mask_only": mask_only,
        "per_layer_floor": floor,
        "calibration": {"samples": len(feeds), "data": calib_data or "embedded corpus", "seq_len": seq_len},
        "layers": [vars(r) for r in layers],
        "notes": notes,
    }
    progress("save", 0, 0)
    with staged_dir(out) as tmp:
        modelio.save(pruned, tmp)
        modelio.copy_sidecars(ref.folder, tmp)
        manifest = ref.derived_manifest(pruned)
        manifest.add_step("prune", **record)
        manifest.save(tmp)
    return PruneResult(
        out,
        sparsity,
        layers,
        notes,
        steps,
        time.perf_counter() - start,
        ref.size_bytes(),
        modelio.resolve(out).size_bytes(),
        mask_only,
        len(feeds),
        record,
    )


def _rows(value: np.ndarray) -> np.ndarray:
    return value.reshape(-1, value.shape[-1]).astype(np.float64)


def _channel_energy(session, batches, tensors: list[str]) -> dict[str, np.ndarray]:
    """Sum over calibration tokens (padding excluded) of each channel's squared activation."""
    totals = {t: 0.0 for t in tensors}
    for feed, real in batches:
        for name, value in zip(tensors, session.run(tensors, feed), strict=True):
            totals[name] = totals[name] + (_rows(value)[real] ** 2).sum(0)
    return totals


def _ffn_scores(g: Graph, block, energy: np.ndarray) -> np.ndarray:
    return np.sqrt(energy) * np.linalg.norm(g.const(block.down.weight), axis=1)


def _head_scores(g: Graph, block, energy: np.ndarray) -> np.ndarray:
    w = g.const(block.out.weight).reshape(block.heads, block.head_dim, -1)
    return np.sqrt(energy.reshape(block.heads, block.head_dim).sum(1)) * np.sqrt((w**2).sum((1, 2)))


def _allocate(scores: list[np.ndarray], sparsity: float, floor: float, multiple: int) -> list[np.ndarray]:
    """Keep the globally best (1 - sparsity) of all units; at least `floor` of each layer; widths
    rounded to `multiple`. Returns the sorted kept indices per layer."""
    if not scores:
        return []
    total = sum(len(s) for s in scores)
    budget = total - int(round(sparsity * total))
    ranked = np.sort(np.concatenate(scores))[::-1]
    threshold = ranked[budget - 1] if budget > 0 else np.inf
    kept = []
    for s in scores:
        n = int((s >= threshold).sum())
        n = max(n, math.ceil(floor * len(s)), 1)
        if multiple > 1 and n < len(s):
            n = min(len(s), max(multiple, int(round(n / multiple)) * multiple))
        kept.append(np.sort(np.argsort(s)[::-1][:n]).astype(np.int64))
    return kept


def _refit(reference, current, batches, tensor: str, keep: np.ndarray, weight, bias):
    """Ridge fit of the pruned model's kept activations (plus a ones column when the projection has
    a bias) onto the unpruned block's output, on the same tokens (padding excluded)."""
    with_bias = bias is not None
    k = len(keep) + with_bias
    gram = np.zeros((k, k))
    cross = np.zeros((k, weight.shape[1]))
    offset = bias.astype(np.float64) if with_bias else 0.0
    for feed, real in batches:
        target = _rows(reference.run([tensor], feed)[0])[real] @ weight + offset
        x = _rows(current.run([tensor], feed)[0])[real][:, keep]
        if with_bias:
            x = np.hstack([x, np.ones((len(x), 1))])
        gram += x.T @ x
        cross += x.T @ target
    kept = np.arange(len(keep))  # the bias column is not shrunk
    gram[kept, kept] += RIDGE * np.mean(np.diag(gram)[kept])
    solution = np.linalg.solve(gram, cross).astype(np.float32)
    return (solution[:-1], solution[-1]) if with_bias else (solution, None)


def _report(kind: str, layer: int, units: int, kept: int, g: Graph, block) -> LayerReport:
    if kind == "ffn":
        per_unit = g.inits[block.up.weight].dims[0] + g.inits[block.down.weight].dims[1]
    else:
        rows = g.inits[block.q.weight].dims[0]
        per_unit = block.head_dim * (3 * rows + g.inits[block.out.weight].dims[1])
    return LayerReport(kind, layer, units, kept, units * per_unit, kept * per_unit)
