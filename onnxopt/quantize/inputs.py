"""What `onnxopt quantize` refuses in the model it is given, checked once it is loaded and before
any calibration, smoothing or search: a model quantized already, and an --int4 --max-drop search
on an encoder."""

from __future__ import annotations

import contextlib

import onnx

from onnxopt.errors import OnnxoptError, cut
from onnxopt.graph_queries.int8_ops import quantized_ops
from onnxopt.io import model_files
from onnxopt.io.manifest import MANIFEST_NAME, Manifest
from onnxopt.io.weight_store import weights_on_disk
from onnxopt.runtime.sessions import check_loads


def load_fp32(ref: model_files.ModelRef, stack: contextlib.ExitStack) -> onnx.ModelProto:
    """The model at `ref`, checked to load in onnxruntime and to be a float model. External
    weights stay in their files: a weight store over them (io/weight_store.py) is opened on
    `stack`, and every weight is checked finite through it, one tensor at a time."""
    # Parsed and checked first (readable, versions, external data inside its folder), then
    # onnxruntime's session, gone before any weight is read: a 4.7 GB model loaded beside the
    # session was held twice (8.5 GB) for a check.
    model = model_files.load(ref, load_weights=False)
    check_loads(ref.onnx_path)
    stack.enter_context(weights_on_disk(ref.onnx_path.parent, model_files.external_locations(ref.onnx_path)))
    model_files.check_finite(model, ref.onnx_path)
    check_fp32(model, ref.manifest, ref.name)
    return model


def check_fp32(model: onnx.ModelProto, manifest: Manifest | None, shown: object) -> None:
    """Refuse a model quantized already: by its graph (int8, QDQ or weight-only ops) or by a
    quantize step its manifest records (int8 embedding tables alone leave no quantized op).
    Quantized again, it only grows and loses accuracy; the fp32 model is what to quantize."""
    held = quantized_ops(model)
    steps = [str(step.get("step", "")) for step in (manifest.steps if manifest else [])]
    done = [name for name in steps if name.startswith("quantize")]
    if not held and not done:
        return
    what = f"it has {', '.join(held[:3])}" if held else f"its {MANIFEST_NAME} records {done[-1]}"
    raise OnnxoptError(
        f"{cut(str(shown))} is already quantized ({what})",
        "quantize the fp32 model it was made from instead",
    )


def check_int4_search(kind: str, mode: str, max_drop: float | None, shown: object) -> None:
    """--int4 --max-drop keeps layers 8-bit by the rise in perplexity as the model generates: an
    encoder has no cache to generate with (it once failed as an internal AttributeError)."""
    if mode == "int4" and max_drop is not None and kind == "encoder":
        raise OnnxoptError(
            f"--int4 --max-drop measures the rise in perplexity, which needs a decoder; "
            f"{cut(str(shown))} is an encoder (it has no cache)",
            "drop --max-drop, or use --max-drop with --dynamic or --static",
        )
