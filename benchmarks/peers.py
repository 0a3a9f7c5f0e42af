"""The two onnxruntime recipes users write by hand today, built the way their docs show.

- quantize_static: QDQ, per-channel, MinMax, 40 calibration samples, on the unfused export;
- transformer fusion (onnxruntime.transformers.optimizer) + quantize_dynamic, default options.
Both get the same calibration text as onnxopt, so the comparison is of the recipes alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx


def _copy_sidecars(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.suffix in (".json", ".txt") and item.name != "onnxopt.json":
            shutil.copy2(item, dst / item.name)


class _Reader:
    def __init__(self, texts, tokenizer, names):
        self.it = iter(
            {
                k: v.astype(np.int64)
                for k, v in tokenizer(t, truncation=True, max_length=128, return_tensors="np").items()
                if k in names
            }
            for t in texts
        )

    def get_next(self):
        return next(self.it, None)


def ort_static_qdq(fp32: Path, out: Path, texts: list[str]) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from transformers import AutoTokenizer

    _copy_sidecars(fp32, out)
    names = {i.name for i in onnx.load(str(fp32 / "model.onnx"), load_external_data=False).graph.input}
    reader = _Reader(texts, AutoTokenizer.from_pretrained(str(fp32)), names)
    quantize_static(
        str(fp32 / "model.onnx"),
        str(out / "model.onnx"),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def ort_fusion_dynamic(fp32: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    _copy_sidecars(fp32, out)
    fused = optimize_model(str(fp32 / "model.onnx"), model_type="bert", num_heads=12, hidden_size=384)
    fused.save_model_to_file(str(out / "fused.onnx"))
    # DefaultTensorType: without it quantize_dynamic stops with "Unable to find data type for weight_name".
    quantize_dynamic(
        str(out / "fused.onnx"),
        str(out / "model.onnx"),
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    (out / "fused.onnx").unlink()
    return out
