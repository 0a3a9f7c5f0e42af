"""Saving models: at the newest IR version the installed onnxruntime reads (probed once, never
newer than onnx writes by default), weights in `<name>.data` past 2 GB (protobuf's limit).
"""

from __future__ import annotations

import functools
from pathlib import Path

import onnx
from onnx import helper

from onnxopt.io import weight_store
from onnxopt.io.external_data import (
    data_file,  # noqa: F401  (callers name it from here)
    has_external,
    without_initializers,
    write_streamed,
)

_TWO_GB = 2**31
MODEL_FILE = "model.onnx"


@functools.lru_cache(maxsize=1)
def runtime_max_ir_version() -> int:
    """The newest IR version the installed onnxruntime loads, found by asking it.

    onnx can write IR versions newer than onnxruntime reads (onnx 1.23 writes IR 12+, older
    runtimes stop at 10 or 11), so models are saved at the newest IR version the runtime accepts.
    """
    for ir in range(onnx.IR_VERSION, 6, -1):
        if _runtime_loads(ir, 13):
            return ir
    return 7


@functools.lru_cache(maxsize=1)
def runtime_max_opset() -> int:
    """The newest default-domain opset the installed onnxruntime loads, found by asking it."""
    ir = min(runtime_max_ir_version(), onnx.IR_VERSION)
    for opset in range(onnx.defs.onnx_opset_version(), 12, -1):
        if _runtime_loads(ir, opset):
            return opset
    return 13


def _runtime_loads(ir: int, opset: int) -> bool:
    """Whether onnxruntime loads a one-Identity model at this IR version and opset."""
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    probe.ir_version = ir
    try:
        ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


def loadable_ir_version(model: onnx.ModelProto) -> int:
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return max(needed, min(model.ir_version, runtime_max_ir_version()))


def save(model: onnx.ModelProto, folder: Path, name: str = MODEL_FILE) -> Path:
    """Save into `folder`, at an IR version the runtime reads; weights go external past 2 GB."""
    model.ir_version = loadable_ir_version(model)
    path = folder / name
    write_model(model, path)
    return path


def is_large(model: onnx.ModelProto) -> bool:
    """Past 2 GB a model cannot be one protobuf; protobuf even refuses to size it, so that counts."""
    try:
        return model.ByteSize() >= _TWO_GB
    except Exception:  # EncodeError: "Failed to serialize proto"
        return True


def write_model(model: onnx.ModelProto, path: Path) -> None:
    """Write as it is; weights go to `data_file(path)` past 2 GB or when they already were external.
    With a weight store open (io/weight_store.py) they are streamed from it, one tensor at a time."""
    if weight_store.active() is not None and has_external(model):
        write_streamed(without_initializers(model), model.graph.initializer, path, threshold=1024)
        return
    if is_large(model) or has_external(model):
        _to_raw_data(model)
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_file(path).name,
            # Small tensors stay inline: onnxruntime's shape inference reads constant inputs such
            # as ReduceSum's axes and cannot read them from external data ("Cannot parse data from
            # external tensors"); a Llama-3.2-1B-shaped model staged with size_threshold=0 failed
            # to load at the ReduceSum before GroupQueryAttention. 1 KiB is onnx's own default.
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))


def _to_raw_data(model: onnx.ModelProto) -> None:
    """onnx moves only raw_data tensors to external files; tensors in typed fields would stay inline."""
    from onnx import numpy_helper

    for i, tensor in enumerate(model.graph.initializer):
        if tensor.data_location != onnx.TensorProto.EXTERNAL and not tensor.HasField("raw_data"):
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name)
            )
