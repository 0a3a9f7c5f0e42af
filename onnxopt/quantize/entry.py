"""`onnxopt quantize`'s entry: a folder in parts (an encoder-decoder) goes part by part
(parts.py), any other model through the one-graph workflow (workflow.py)."""

from __future__ import annotations

from pathlib import Path

from onnxopt.quantize.parts import quantize_parts
from onnxopt.quantize.plan import in_parts
from onnxopt.quantize.workflow import QuantizeResult, quantize


def quantize_model(
    src: Path, out: Path, config=None, overwrite=False, on_progress=None, **options
) -> QuantizeResult:
    """`onnxopt quantize`: a folder in parts part by part, any other model by the workflow."""
    run = quantize_parts if in_parts(Path(src)) else quantize
    return run(src, out, config, overwrite=overwrite, on_progress=on_progress, **options)
