"""The exported graph against PyTorch: onnxruntime and the original model on one padded batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.silence import quiet

_CHECK_TEXTS = [
    "onnxopt checks the exported graph against PyTorch.",
    "A second, longer sentence pads the first.",
]


def compare_with_torch(
    source: str, folder: Path, task: str, types: dict[str, type], trust_remote_code: bool
) -> dict[str, float]:
    """Max abs difference per ONNX output between onnxruntime and PyTorch on a padded sample batch."""
    import onnxruntime as ort
    import torch
    from optimum.exporters.tasks import TasksManager

    from onnxopt.data.samples import complete_inputs, load_tokenizer

    tokenizer = load_tokenizer(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = dict(tokenizer(_CHECK_TEXTS, padding=True, return_tensors="np"))
    onnx_path = folder / model_files.MODEL_FILE
    feed = complete_inputs(enc, types)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    with quiet():
        torch_model = TasksManager.get_model_from_task(
            task, source, library_name="transformers", trust_remote_code=trust_remote_code
        )
    torch_model.eval()
    with torch.no_grad():
        torch_out = torch_model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in feed.items()})
    diffs = {}
    for name, value in onnx_outputs.items():
        if name in torch_out and torch_out[name] is not None:
            expected = torch_out[name].numpy()
            diffs[name] = (
                float(np.max(np.abs(expected - value))) if expected.shape == value.shape else float("inf")
            )
    if not diffs:
        raise OnnxoptError(
            "no exported output matches a PyTorch output by name",
            "the export may be for another task; pass --task explicitly",
        )
    return diffs
