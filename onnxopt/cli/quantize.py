"""`onnxopt quantize DIR -o OUT (--dynamic | --static --calib N)`"""

from __future__ import annotations

from pathlib import Path

import typer

from onnxopt.cli._shared import VERIFY_LOADING, show_verified
from onnxopt.errors import OnnxoptError
from onnxopt.quantize.workflow import quantize
from onnxopt.report import render


def command(
    model: Path = typer.Argument(..., help="Model folder (from `onnxopt export`) or .onnx file."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the quantized model."),
    static: bool = typer.Option(False, "--static", help="Static int8: activation ranges from calibration."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic int8: activation ranges at run time."),
    calib: int = typer.Option(40, help="Number of calibration samples (static)."),
    calib_data: str | None = typer.Option(
        None, help="Text/csv/tsv/jsonl file, dataset folder or `datasets` name; default: embedded corpus."
    ),
    text_column: str | None = typer.Option(
        None, help="Column(s) holding the text: NAME or INDEX, two for pairs."
    ),
    method: str = typer.Option("minmax", help="Calibration method: minmax, entropy or percentile."),
    per_channel: bool = typer.Option(
        True, "--per-channel/--no-per-channel", help="Per-channel weight scales."
    ),
    ops: str | None = typer.Option(
        None, help="Op types to quantize, e.g. MatMul,Gemm,Attention,EmbedLayerNormalization."
    ),
    exclude: list[str] = typer.Option([], help="Node name to keep in fp32 (repeatable)."),
    seq_len: int = typer.Option(128, help="Truncate calibration samples to this many tokens."),
    optimize: bool = typer.Option(True, "--optimize/--no-optimize", help="Fuse transformer ops first."),
    max_drop: float | None = typer.Option(
        None, help="Keep the most sensitive nodes in fp32 until the accuracy drop is at most this."
    ),
    eval_data: str | None = typer.Option(
        None,
        help="STS pairs file for --max-drop (Spearman points); default: fidelity on held-back samples.",
    ),
    smooth: bool | None = typer.Option(
        None,
        "--smooth/--no-smooth",
        help="Fold SmoothQuant scales, alpha searched per activation on --calib samples "
        "(default: on when the model folder has a tokenizer).",
    ),
    all_static: bool = typer.Option(
        False, "--all-static", help="Static scales for GELU outputs too (default: dynamic there, see README)."
    ),
    qdq: bool = typer.Option(
        False,
        "--qdq",
        help="Keep portable QDQ (for OpenVINO, TensorRT); default: onnxruntime CPU int8 kernels.",
    ),
    overwrite: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    verify_loading: bool = VERIFY_LOADING,
) -> None:
    """Quantize a model to int8, dynamic or static."""
    if static == dynamic:
        raise OnnxoptError(
            "choose exactly one of --static and --dynamic",
            "e.g. `onnxopt quantize DIR --static --calib 40 -o OUT`",
        )
    with render.progress_bar() as progress:
        result = quantize(
            model,
            output,
            "static" if static else "dynamic",
            calib=calib,
            calib_data=calib_data,
            text_column=text_column,
            method=method,
            per_channel=per_channel,
            ops=ops,
            exclude=tuple(exclude),
            seq_len=seq_len,
            optimize=optimize,
            overwrite=overwrite,
            verify_loading=verify_loading,
            on_progress=progress,
            max_drop=max_drop,
            eval_data=eval_data,
            all_static=all_static,
            qdq=qdq,
            smooth=smooth,
        )
    render.quantize_result(result)
    show_verified(result)
