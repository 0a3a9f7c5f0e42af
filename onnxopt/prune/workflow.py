"""The `prune` workflow: choose FFN neurons and attention heads to remove on calibration text
under one budget per unit type, re-fit each pruned block's output projection, then fold (or mask).

The choice needs no gradients: each unit is priced by the norm of what it adds to its block's
output over calibration tokens (samples run in padded batches; padding rows are masked out,
never counted), and each unit type's budget, a fraction of its blocks' linear weights, goes to
the cheapest steps across all layers (onnxopt.prune.unit_selection). Each block keeps at least the
floor; FFN widths move in multiples of 16 for the GEMM kernels. The re-fits: onnxopt.prune.refit.

Decoders exported with their KV cache are calibrated on prefills (empty past tensors). Under
grouped-query attention a unit is a K/V head and its query heads; cutting one changes that
layer's cache shape, which the folded graph declares and the manifest records layer by layer
(config.json, with one count for every layer, is left alone).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt.data.samples import InputTypes, TokenizedSamples, input_types, load_tokenizer, padded_batches
from onnxopt.data.sources import embedded_samples, load_samples
from onnxopt.errors import OnnxoptError
from onnxopt.evaluate.verify import verify_staged
from onnxopt.graph_queries.graph_index import Graph
from onnxopt.graph_queries.int8_ops import quantized_ops
from onnxopt.graph_queries.prune_structures import find_attention_blocks, find_ffn_blocks, query_channels
from onnxopt.graph_queries.shared_weights import shared_linears, without_shared_weights
from onnxopt.io import limits, model_files, saving
from onnxopt.io.leftovers import temp_dir
from onnxopt.io.outputs import claim_output
from onnxopt.io.weight_store import weights_on_disk
from onnxopt.options import config_from
from onnxopt.passes import Pipeline, StepReport
from onnxopt.passes.prune_fold import FfnPlan, FoldPruned, HeadPlan
from onnxopt.prune.config import PruneConfig
from onnxopt.prune.curves import ffn_curve, head_curve, keep_per_block
from onnxopt.prune.refit import PrefillProbe, refit, statistics, target_of
from onnxopt.prune.report import LayerReport, cache_notes, cache_widths, measured, parameters
from onnxopt.prune.stream import RefitStream
from onnxopt.runtime.sessions import check_loads

Progress = Callable[[str, int, int], None]
_FUSED = ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "MultiHeadAttention", "BiasGelu")
BATCH = 16  # samples per onnxruntime call while collecting statistics


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
    verified: object = None  # VerifyResult, when --verify-loading ran (in the staged folder)
    parameters: tuple[int, int] = (0, 0)  # the whole model's, read from the input and the written file

    @property
    def linear_params(self) -> tuple[int, int]:
        return sum(r.params_before for r in self.layers), sum(r.params_after for r in self.layers)


@dataclass
class _Blocks:
    ffn: list
    attention: list
    notes: list[str]


def prune(
    src: Path,
    out: Path,
    config: PruneConfig | None = None,
    overwrite: bool = False,
    on_progress: Progress | None = None,
    **options,
) -> PruneResult:
    config = config_from(PruneConfig, config, options)
    progress = on_progress or (lambda _s, _d, _t: None)
    start = time.perf_counter()
    ref = model_files.resolve(src)
    limits.check_sequence_length(ref, config.seq_len, "--seq-len")
    inputs = [ref.folder or ref.onnx_path]
    with claim_output(out, inputs, overwrite) as claim, contextlib.ExitStack() as stack:
        model = _unfused_fp32(ref, stack)
        graph = Graph(model)
        blocks = _blocks(graph, ref, config)
        feeds = _feeds(ref, model, config)
        ffn_plans, head_plans = _plans(model, graph, blocks, feeds, config, progress)
        pruned, steps = Pipeline([FoldPruned(ffn_plans, head_plans, config.mask_only)]).run(model)
        progress("save", 0, 0)
        with claim.staged() as tmp:
            saving.save(pruned, tmp)
            written = model_files.load(model_files.resolve(tmp), load_weights=config.mask_only)
            layers = measured(graph, Graph(written), head_plans, ffn_plans, config.mask_only)
            counts = (parameters(model), parameters(written))
            blocks.notes += cache_notes(head_plans, config.mask_only)
            record = _record(config, len(feeds), layers, counts, blocks.notes)
            if any(p.block.kv_heads or p.block.cache for p in head_plans):
                record["kv_heads"] = cache_widths(Graph(written), head_plans)
            model_files.copy_sidecars(ref.folder, tmp, written)
            manifest = ref.derived_manifest(pruned)
            manifest.add_step("prune", **record)
            manifest.save(tmp)
            verified = verify_staged(config.verify_loading, tmp, ref.folder, out)
        size_after, seconds = model_files.resolve(out).size_bytes(), time.perf_counter() - start
        sizes = (ref.size_bytes(), size_after)
        return PruneResult(
            out,
            config.sparsity,
            layers,
            blocks.notes,
            steps,
            seconds,
            *sizes,
            config.mask_only,
            len(feeds),
            record,
            verified,
            counts,
        )


def _unfused_fp32(ref, stack):
    """The model to prune; external weights left on disk, read through a weight store opened on
    `stack` (quantize/inputs.py's load_fp32 does the same, for the same reasons)."""
    model = model_files.load(ref, load_weights=False)
    check_loads(ref.onnx_path)
    stack.enter_context(weights_on_disk(ref.onnx_path.parent, model_files.external_locations(ref.onnx_path)))
    model_files.check_finite(model, ref.onnx_path)
    ops = {n.op_type for n in model.graph.node}
    if quantized_ops(model):  # int8 or weight-only (int4 / 8-bit MatMulNBits)
        raise OnnxoptError(
            f"{ref.name} is quantized", "prune the fp32 export, then quantize the pruned model"
        )
    if ops & set(_FUSED):
        raise OnnxoptError(
            f"{ref.name} is already fused ({', '.join(sorted(ops & set(_FUSED)))})",
            "prune the unfused export from `onnxopt export`; quantize fuses the pruned model afterwards",
        )
    return model


def _blocks(graph: Graph, ref, config: PruneConfig) -> _Blocks:
    attention, notes = find_attention_blocks(graph) if config.heads else ([], [])
    ffn, shared_ffn = without_shared_weights(graph, find_ffn_blocks(graph) if config.ffn else [])
    attention, shared_attention = without_shared_weights(graph, attention)
    blocks = _Blocks(ffn, attention, notes + shared_attention + shared_ffn)
    if not ffn and not attention and shared_linears(graph):
        raise OnnxoptError(
            f"{ref.name} shares weights between its layers ({shared_linears(graph)} linear layers "
            "read shared weights, as ALBERT's do), so no block can be pruned on its own",
            "prune a model whose layers own their weights; quantize works on this one",
        )
    if not ffn and not attention:
        raise OnnxoptError(
            f"found no FFN or attention blocks to prune in {ref.name}",
            "onnxopt prunes unfused transformer exports (BERT, RoBERTa, DistilBERT, MiniLM, GPT-2, "
            "Llama, Qwen2, Mistral, Phi-3)",
        )
    return blocks


def _feeds(ref, model, config: PruneConfig) -> TokenizedSamples:
    tokenizer = load_tokenizer(ref.folder)
    # More text re-fits better (FFN 60%: STS-B dev drop 0.89 with 128 texts, 0.59 with 342), so
    # the embedded corpus is used whole when more is asked for than it has.
    if config.calib_data:
        samples = load_samples(config.calib_data, config.calib, config.text_column)
    else:
        samples = embedded_samples(config.calib, clip=True, corpus="sentences")
    # Prompts only: a decoder's empty past tensors are added per batch by the session that runs
    # it (PrefillProbe), shaped by that graph, since padded batching pads every input's axis 1.
    types = input_types(model)
    past = set(types.cache.past) if types.cache is not None else set()
    prompts = InputTypes({name: dtype for name, dtype in types.items() if name not in past})
    return TokenizedSamples(samples, tokenizer, prompts, config.seq_len)


def _plans(model, graph: Graph, blocks: _Blocks, feeds, config: PruneConfig, progress):
    """Which units each block keeps, and its re-fitted output projection, bottom layer first."""
    progress("score", 0, 0)
    tensors = [b.hidden_input for b in blocks.ffn] + [b.context for b in blocks.attention]
    projections = [b.down for b in blocks.ffn] + [b.out for b in blocks.attention]
    targets = {p.node: target_of(graph, p) for p in projections}
    batches = list(padded_batches(feeds, BATCH))
    with temp_dir("prune") as spill:
        # One pass over the unpruned model: the Gram matrices that price the units, and each
        # block's target (its output plus the skip connection), spilled to disk so memory stays
        # flat however much text is used.
        sums = [t for t, _ in targets.values()]
        probe = PrefillProbe(model, tensors + sums)
        energies, wanted = statistics(probe, batches, tensors, sums, Path(spill))
        # One budget per unit type: priced by output norm, heads looked cheap per parameter and a
        # shared budget pruned them to the floor (STS-B dev drop 6.4 at 0.5, against 3.6 this way).
        floor = config.per_layer_floor
        ffn_keep = keep_per_block(
            [ffn_curve(graph, b, energies[b.hidden_input], floor) for b in blocks.ffn], config.sparsity
        )
        head_keep = keep_per_block(
            [head_curve(graph, b, energies[b.context], floor) for b in blocks.attention], config.sparsity
        )
        # Blocks in graph order, so each re-fit sees the pruned layers below it.
        order = {n.name: i for i, n in enumerate(model.graph.node)}
        jobs = sorted(
            [("ffn", b, k) for b, k in zip(blocks.ffn, ffn_keep, strict=True)]
            + [("attention", b, k) for b, k in zip(blocks.attention, head_keep, strict=True)],
            key=lambda job: order[_projection(job).node],
        )
        ffn_plans, head_plans = [], []
        folded = model  # the model with every plan so far folded in: what the next re-fit probes
        (Path(spill) / "stream").mkdir()
        stream = RefitStream(batches, Path(spill) / "stream")
        probed = [_probed(job, targets) for job in jobs]
        for done, job in enumerate(jobs):
            progress("reconstruct", done, len(jobs))
            later = [t for names in probed[done:] for t in names]
            plan = _plan(folded, graph, job, targets, wanted, stream.probe(folded, probed[done], later))
            new_ffn, new_head = ([plan], []) if job[0] == "ffn" else ([], [plan])
            ffn_plans += new_ffn
            head_plans += new_head
            # One block folded at a time: folding every plan again for each re-fit wrote each
            # layer's sliced weights once per later layer (issue 28: a 1B shape's scratch file
            # filled the disk after 16 of 32 re-fits).
            if done + 1 < len(jobs):
                before, folded = folded, FoldPruned(new_ffn, new_head)(folded).model
                stream.folded(before, folded, targets[_projection(job).node][0])
    progress("reconstruct", len(jobs), len(jobs))
    return ffn_plans, head_plans


def _projection(job):
    kind, block, _ = job
    return block.down if kind == "ffn" else block.out


def _probed(job, targets) -> list[str]:
    """What a job's re-fit reads: its projection's input, and the skip connection its output meets."""
    kind, block, _ = job
    tensor = block.hidden_input if kind == "ffn" else block.context
    residual = targets[_projection(job).node][1]
    return [tensor] + ([residual] if residual else [])


def _plan(folded, graph, job, targets, wanted, probed):
    """One block's plan: its kept units and output projection, re-fitted on `folded`, the model
    with the blocks below it pruned, whose values `probed` yields batch by batch (a generator that
    runs the model only when read)."""
    kind, block, keep = job
    proj = _projection(job)
    if kind == "ffn":
        width, channels = block.width, keep
    else:
        width, channels = block.heads * block.head_dim, query_channels(block, keep)
    weight, bias = graph.const(proj.weight), graph.const(proj.bias) if proj.bias else None
    if len(channels) < width:  # a block that keeps everything stays exactly as it was
        weight, bias = refit(probed, wanted[targets[proj.node][0]], channels, bias)
    if kind == "ffn":
        return FfnPlan(block, channels, weight, bias)
    return HeadPlan(block, keep, weight, bias)


def _record(config: PruneConfig, samples: int, layers, counts, notes) -> dict:
    return {
        "sparsity": config.sparsity,
        "heads": config.heads,
        "ffn": config.ffn,
        "mask_only": config.mask_only,
        "per_layer_floor": config.per_layer_floor,
        "calibration": {
            "samples": samples,
            "data": config.calib_data or "embedded corpus",
            "seq_len": config.seq_len,
        },
        "layers": [vars(r) for r in layers],
        "parameters": {"before": counts[0], "after": counts[1]},
        "notes": notes,
    }
