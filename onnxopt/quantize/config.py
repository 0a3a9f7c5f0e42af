"""`onnxopt quantize`'s options, written once: the command line and the recipe schema derive from it."""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.choices import (
    CALIBRATION_METHODS,
    QUANTIZE_MODES,
    QUANTIZE_OPS,
    QUANTIZE_TARGETS,
    WEIGHT_ALGORITHMS,
)
from onnxopt.errors import OnnxoptError
from onnxopt.options import Options, exactly_one, option


@dataclass(frozen=True)
class QuantizeConfig(Options):
    mode: str | None = option(
        None,
        "static or dynamic int8, or int4 weight-only.",
        choices=QUANTIZE_MODES,
        as_flags=True,
        choice_help=(
            "Static int8: activation ranges from calibration.",
            "Dynamic int8: activation ranges at run time.",
            "int4 weight-only (MatMulNBits), in blocks of --block-size; for decoders, whose decode "
            "reads every weight once per token.",
        ),
    )
    block_size: int = option(32, "int4: input channels per scale (16, 32, 64 or 128).", low=16, high=128)
    algo: str = option(
        "offset",
        "int4: offset (a float offset per block, GGUF Q4_1's grid), asym (integer zero points, "
        "searched like offset; faster, less exact), rtn (onnxruntime's round), hqq "
        "(searched scales) or gptq (calibrated).",
        choices=WEIGHT_ALGORITHMS,
    )
    accuracy_level: int = option(
        4, "int4: 4 multiplies in int8 (fastest on CPU), 0 dequantizes to fp32 first.", low=0, high=4
    )
    calib: int = option(40, "Calibration samples (static).", low=1)
    calib_data: str | None = option(
        None,
        "Text/csv/tsv/jsonl file, dataset folder or `datasets` name; default: the embedded corpus.",
        metavar="PATH",
    )
    text_column: str | None = option(None, "Column(s) holding the text: NAME or INDEX, two for pairs.")
    method: str = option("minmax", "Calibration method.", choices=CALIBRATION_METHODS)
    per_channel: bool = option(True, "Per-channel weight scales.")
    ops: tuple[str, ...] = option(
        QUANTIZE_OPS, "Op types to quantize.", choices=QUANTIZE_OPS, metavar="MatMul,Gemm"
    )
    exclude: tuple[str, ...] = option((), "Node names to keep in fp32.", metavar="NODE,NODE")
    seq_len: int = option(128, "Truncate calibration samples to this many tokens.", low=1)
    optimize: bool = option(True, "Fuse transformer ops first.")
    max_drop: float | None = option(
        None, "Keep the most sensitive nodes in fp32 until the accuracy drop is at most this.", low=0
    )
    eval_data: str | None = option(
        None,
        "STS pairs file for --max-drop (Spearman points); default: fidelity on held-back samples.",
        metavar="PATH",
    )
    smooth: bool | None = option(
        None, "Fold SmoothQuant scales, alpha searched per activation (default: on with a tokenizer)."
    )
    block_search: bool | None = option(
        None,
        "int4 offset: each block's scale and minimum searched by the error weighted with calibration "
        "activations (default: on with a tokenizer).",
    )
    embeddings: bool = option(True, "Word-embedding tables to int8 too, one scale per row.")
    embedding_bits: int = option(
        8,
        "Word-embedding tables: 8 bits (a scale per row) or 4 (--int4 only: blocks of 32, "
        "onnxruntime's GatherBlockQuantized; off-grid SmolLM2: 7.6% smaller, perplexity +0.2 to +0.7 "
        "points).",
        low=4,
        high=8,
    )
    head_bits: int = option(
        8,
        "int4: the LM head's bits, 8 or 4 (off-grid SmolLM2: 10% smaller, perplexity +1.3 to +1.9 points).",
        low=4,
        high=8,
    )
    dynamic_gelu: bool | None = option(
        None,
        "Static: dynamic activation scales for the MatMuls fed by a GELU, the FFN down projections "
        "(default: with --qdq only).",
    )
    target: str = option(
        "cpu",
        "Where the int8 model runs: cpu (onnxruntime's CPU kernels), openvino (QDQ of plain ONNX ops, "
        "attention core fp32), portable (QDQ of plain ONNX ops, every MatMul), auto (cpu and openvino "
        "both built and timed at batch 1 and 32, the faster kept with its provider).",
        choices=QUANTIZE_TARGETS,
    )
    qdq: bool = option(
        False, "cpu target: keep QDQ on onnxruntime's fused graph instead of its int8 kernels."
    )
    verify_loading: bool = option(
        False, "Load OUTPUT with optimum's ORTModelFor<Task>; compare with the input."
    )

    def check(self) -> None:
        if self.mode is None:
            raise OnnxoptError(
                exactly_one(QUANTIZE_MODES),
                "e.g. `onnxopt quantize DIR --static --calib 40 -o OUT`",
            )
        if self.block_size not in (16, 32, 64, 128):
            raise OnnxoptError(
                f"--block-size must be 16, 32, 64 or 128, got {self.block_size}", "e.g. --block-size 32"
            )
        for flag, bits in (("--embedding-bits", self.embedding_bits), ("--head-bits", self.head_bits)):
            if bits not in (4, 8):
                raise OnnxoptError(f"{flag} must be 4 or 8, got {bits}", f"e.g. {flag} 4")
            if bits == 4 and self.mode != "int4":
                raise OnnxoptError(f"{flag} 4 is for --int4 models", f"drop {flag}, or quantize with --int4")
        if self.target != "cpu" and self.mode == "int4":
            raise OnnxoptError(
                f"--target {self.target} is for int8; int4 is written as onnxruntime's MatMulNBits",
                "drop --target, or use --static / --dynamic",
            )
        if self.eval_data is not None and self.max_drop is None:
            raise OnnxoptError(
                "--eval-data is used by the accuracy-aware search", "pass --max-drop X with it"
            )
