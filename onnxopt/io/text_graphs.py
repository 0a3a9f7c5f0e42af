"""The small graphs under graphs/, written in ONNX text format, parsed into models."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.parser


def graphs_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # onnxopt/, in a wheel or a checkout
    for candidate in (package / "_graphs", package.parent / "graphs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("graphs/ folder not found")


def load(name: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model((graphs_dir() / f"{name}.onnxtxt").read_text())
    onnx.checker.check_model(model)
    return model
