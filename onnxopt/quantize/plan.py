"""What a quantize run does, decided once: the user's options (QuantizeConfig, kept as given) plus
the model's kind and the CPU make a frozen QuantizePlan. `make_plan` is the one place that
branches on mode x target x kind; the passes read the plan, and the manifest records both the
options and the plan, with the reason for each decision the options did not state.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.choices import QDQ_OPS
from onnxopt.io.model_info import ModelInfo
from onnxopt.quantize.config import QuantizeConfig
from onnxopt.quantize.targets import PLAIN_ONNX, attention_core, attention_scores

ENCODER, DECODER, PARTS = "encoder", "decoder", "encoder-decoder"
INT4_HEAD = (
    "8-bit LM head (--head-bits 4 for int4): off-grid SmolLM2, offset int4 with the head in 4 bits "
    "too, STS-B dev text (2026-12-07): +3.6% -> +4.9% perplexity over fp32 (RTN's int4 head, "
    "2026-12-01: +27.5%), for 13.6 MB of 136 and 0.3 ms of 9.4 a decoded token"
)
DECODER_8BIT = (
    "decoders: 8-bit MatMulNBits (blocks of 32, int8 multiplies) instead of DynamicQuantizeMatMul. "
    "SmolLM2, 2026-12-01, AMD EPYC AVX512-VNNI, perplexity on STS-B dev text: +0.3% at 2.12x fp32's "
    "decode speed, against +6.9% at 1.69x"
)
# The activation-weighted block search (graph_queries/block_search.py), measured 2026-12-07 on an
# AMD EPYC with `onnxopt eval --task perplexity`: SmolLM2 moved off its Q4_1 grid
# (benchmarks/offgrid.py, sigma 0.2), held-out STS-B train text, over fp32: block 32 +25.2% ->
# +2.8%, 64 +37.0% -> +12.6%, 128 +73.5% -> +38.0%; the tuning text (the embedded corpus past the
# calibration samples) block 32 +23.2% -> +5.4%; the bundled model, on its grid, +0.5% both.
# Quantize 63 -> 117 s (the search and its calibration pass: 55 s of it). Commands: `onnxopt
# quantize OFFGRID --int4 [--block-size 64|128] [--no-block-search]`, then `onnxopt eval OUT --task
# perplexity --data heldout.txt --limit 1000` (benchmarks/offgrid_measure.py's text and steps).
SEARCHED_ALGORITHMS = ("offset", "asym")  # whose blocks the search fits
BLOCK_SEARCH = (
    "int4 offset: each block's scale and minimum searched by the error weighted with E[x^2] of its "
    "input channels (calibration text), not min-max: SmolLM2 off its Q4_1 grid, block 32, "
    "+25.2% -> +2.8% perplexity over fp32; on its grid +0.5% both (2026-12-07)"
)
# The encoder-decoder parts were written without these before issue 27 made them a decision; not
# measured on T5/BART, so the written graphs stay as they were.
PARTS_AS_BEFORE = "not measured on encoder-decoder parts; each part is written as before"


def model_kind(source) -> str:
    """encoder, decoder (one graph with a KV cache) or encoder-decoder (a folder in parts)."""
    return ModelInfo.read(source).kind


def in_parts(source) -> bool:
    """Whether `source` is an encoder-decoder folder in parts (its graphs are not read)."""
    return ModelInfo.read(source).in_parts


@dataclass(frozen=True)
class QuantizePlan:
    options: QuantizeConfig  # as the user gave them
    kind: str  # ENCODER, DECODER or PARTS
    target: str  # the layout built: cpu, openvino or portable (auto builds one plan per layout)
    optimize: bool  # onnxruntime's transformer fusions first
    fuse_decoder_attention: bool
    pack_projections: bool  # Q/K/V and gate/up packed into one MatMulNBits each
    ops: tuple[str, ...]
    qdq: bool  # QDQ kept, not onnxruntime's CPU int8 kernels
    reduce_range: bool  # 7-bit weights (no VNNI here)
    activations: str  # static activations: u8 (CPU kernels) or s8 (OpenVINO)
    dynamic_gelu: bool  # static: dynamic scales for the MatMuls fed by a GELU
    weight_bits: int | None  # MatMulNBits width of the body; None: int8 operators
    lm_head_8bit: bool
    embeddings: bool  # word-embedding tables to int8, one scale per row (or 4-bit blocks)
    embedding_bits: int  # 8, or 4 (int4 models: GatherBlockQuantized)
    block_search: bool  # int4 offset: each block's grid searched by calibration activations
    smooth: bool
    smooth_explicit: bool  # the smoothing Mul kept in the graph (OpenVINO fuses it)
    smooth_grid: str  # the weight grid smoothing simulates: int4 or int8
    smooth_reduce_range: bool
    attention_core_fp32: bool  # QK^T and probabilities x V excluded
    calibrated: bool  # static ranges or GPTQ: reads calibration text
    why: tuple[tuple[str, str], ...] = ()  # (decision, reason) where the options did not say

    @property
    def plain_onnx(self) -> bool:
        """QDQ on plain ONNX ops for another runtime (openvino, portable)."""
        return self.target != "cpu"

    def excluded(self, model) -> tuple[str, ...]:
        """Nodes kept fp32 in the prepared `model`: the user's, then the attention core."""
        core = (*attention_scores(model), *attention_core(model)) if self.attention_core_fp32 else ()
        user = self.options.exclude
        return (*user, *(name for name in core if name not in user))

    def as_record(self, excluded: tuple[str, ...]) -> dict:
        skip = {"options", "why"}
        record = {k: v for k, v in vars(self).items() if k not in skip}
        record["ops"] = list(self.ops)
        derived = [name for name in excluded if name not in self.options.exclude]
        record["exclude"] = {"options": list(self.options.exclude), "attention core": derived}
        record["why"] = dict(self.why)
        return record


def make_plan(config: QuantizeConfig, kind: str, reduce_range: bool, has_tokenizer: bool, layout=None):
    """The plan for `config` on a model of `kind` on a CPU with `reduce_range`; `layout` names the
    target built when config.target is auto (target_choice builds cpu and openvino)."""
    why: dict[str, str] = {}
    mode, target = config.mode, layout or config.target
    if kind == PARTS and target != "cpu":
        why["target"] = f"--target {target} is not applied to encoder-decoder parts: {PARTS_AS_BEFORE}"
        target = "cpu"
    plain = target != "cpu" and mode != "int4"
    optimize, qdq, ops = config.optimize, config.qdq, config.ops
    if plain:  # No fused ops to quantize: Attention and EmbedLayerNormalization are onnxruntime's fusions.
        optimize, qdq = False, True
        ops = tuple(op for op in config.ops if op in QDQ_OPS) or QDQ_OPS
        why["layout"] = PLAIN_ONNX[target]
    decoder = kind == DECODER
    weight_bits = 4 if mode == "int4" else None
    if mode == "dynamic" and decoder and not qdq:
        weight_bits, why["weight_bits"] = 8, DECODER_8BIT
    elif mode == "dynamic" and kind == PARTS:
        why["weight_bits"] = f"int8 operators (DynamicQuantizeMatMul) on every part: {PARTS_AS_BEFORE}"
    dynamic_gelu = mode == "static" and _gelu_scales_dynamic(config, qdq, plain, why)
    smooth = config.smooth
    if smooth is None:
        smooth = _default_smoothing(mode, kind, has_tokenizer, why)
    lm_head = _lm_head_8bit(config, kind, why)
    block_search = _block_search(config, kind, has_tokenizer, why)
    embeddings = config.embeddings and kind != PARTS
    if config.embeddings and not embeddings:
        why["embeddings"] = PARTS_AS_BEFORE
    return QuantizePlan(
        options=config,
        kind=kind,
        target=target,
        optimize=optimize,
        fuse_decoder_attention=optimize and decoder,
        pack_projections=optimize and decoder and mode in ("int4", "dynamic") and not qdq,
        ops=ops,
        qdq=qdq,
        reduce_range=reduce_range,
        activations="s8" if target == "openvino" and mode == "static" else "u8",
        dynamic_gelu=dynamic_gelu,
        weight_bits=weight_bits,
        lm_head_8bit=lm_head,
        embeddings=embeddings,
        embedding_bits=config.embedding_bits,
        block_search=block_search,
        smooth=smooth,
        smooth_explicit=target == "openvino" and mode == "static",
        # The parts pipeline always simulated the int8 grid (as before issue 27).
        smooth_grid="int4" if mode == "int4" and kind != PARTS else "int8",
        # 8-bit MatMulNBits keeps full-range weights; the int8 quantizers not.
        smooth_reduce_range=reduce_range and weight_bits != 8,
        attention_core_fp32=target == "openvino" and mode != "int4",
        calibrated=mode == "static" or (mode == "int4" and config.algo == "gptq"),
        why=tuple(why.items()),
    )


def _block_search(config: QuantizeConfig, kind: str, has_tokenizer: bool, why: dict) -> bool:
    """int4 offset: whether each block's grid is searched by calibration activations (BLOCK_SEARCH)."""
    if config.mode != "int4" or config.algo not in SEARCHED_ALGORITHMS or kind == PARTS:
        return False
    if config.block_search is not None:
        return config.block_search
    why["block_search"] = BLOCK_SEARCH if has_tokenizer else "no calibration text: min-max blocks"
    return has_tokenizer


def _gelu_scales_dynamic(config: QuantizeConfig, qdq: bool, plain: bool, why: dict) -> bool:
    """Whether static int8 gives the MatMuls fed by a GELU dynamic activation scales.

    With the CPU layout a calibrated scale there lost nothing (all-MiniLM-L6-v2, STS-B drop dev /
    train / everyday 0.09 / 0.10 / 0.08, dynamic 0.06 / 0.13 / -0.03) and runs faster (see
    `after_activation`); with --qdq it cost 0.45 / 1.15 / 0.22 against 0.00 / 0.13 / -0.09
    (2026-12-02, measured, the cause not traced). Plain ONNX targets: static scales throughout
    (targets.py: a dynamic scale is no QDQ pair OpenVINO folds).
    """
    if plain:
        why["dynamic_gelu"] = "static scales throughout for QDQ on plain ONNX ops (targets.py)"
        return False
    if config.dynamic_gelu is None:
        why["dynamic_gelu"] = "on with --qdq only (measured: see quantize/plan.py)"
        return qdq
    return config.dynamic_gelu


def _lm_head_8bit(config: QuantizeConfig, kind: str, why: dict) -> bool:
    if config.mode != "int4":
        why["lm_head_8bit"] = "int4 only"
        return False
    if kind == PARTS:
        why["lm_head_8bit"] = PARTS_AS_BEFORE
        return False
    why["lm_head_8bit"] = INT4_HEAD if config.head_bits == 8 else "--head-bits 4"
    return config.head_bits == 8


def _default_smoothing(mode: str, kind: str, has_tokenizer: bool, why: dict) -> bool:
    # Smoothing is on wherever calibration text can be tokenized (static: always). For int4 it
    # is chosen by the weight-only error: SmolLM2 int4 block 32, perplexity on STS-B dev text
    # (2026-12-02), +22.1% -> +12.7% over fp32 (RMSNorm outputs). Not adopted: the SwiGLU
    # products too (Smooth(gates=True)): +12.0% on dev but +15.4% against +14.3% on held-out
    # STS-B train text; AWQ's scale max|X|^alpha instead of SmoothQuant's: +13.6% on dev.
    if kind == PARTS:
        why["smooth"] = f"on except for int4 on encoder-decoder parts: {PARTS_AS_BEFORE}"
        return mode != "int4"
    why["smooth"] = "on wherever calibration text can be tokenized (static: always)"
    return mode == "static" or has_tokenizer
