"""Weights kept on disk while passes rewrite the graph of a model with external data.

Such a model is loaded without its weights: each initializer stays a reference into the input
folder's data file. Passes read a tensor with `array` and make one with `tensor`; while a store is
open, a tensor made of `SPILL_BYTES` or more is appended to a scratch file instead of being held.
Memory then holds the graph and the tensors in hand, not the model. Holding the model does not
work in protobuf: a removed or replaced tensor's bytes stay in the model's arena until the whole
model goes, so rewriting a 4.7 GB Llama-3.2-1B shape in place still grew to 8.1 GB after packing
its projections, and 14.5 GB at the peak (issue 28). With no store open, `array` and `tensor` are
numpy_helper's to_array and from_array: models without external data are handled as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxopt.errors import OnnxoptError
from onnxopt.io.files import file_in_folder
from onnxopt.io.leftovers import temp_dir

SPILL_BYTES = 1 << 20  # smaller tensors (norms, scales, indices) are kept in the graph
_ALIGN = 4096
_STORE: contextvars.ContextVar[WeightStore | None] = contextvars.ContextVar("weight_store", default=None)


class WeightStore:
    """Where external tensors are read from (`files`: location -> path) and made ones written."""

    def __init__(self, files: dict[str, Path], scratch: Path):
        self.files = dict(files)
        self.scratch = scratch
        self.files[scratch.name] = scratch
        self.spilled = 0  # bytes written to the scratch file

    def array(self, tensor: onnx.TensorProto) -> np.ndarray:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            return numpy_helper.to_array(tensor)
        path, offset = self._place(tensor)
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        count = math.prod(tensor.dims)
        with path.open("rb") as f:
            f.seek(offset)
            data = np.fromfile(f, dtype=dtype, count=count)
        if data.size != count:
            raise OnnxoptError(f"{path.name} ends inside tensor {tensor.name}", "export the model again")
        return data.reshape(tuple(tensor.dims))

    def mapped(self, tensor: onnx.TensorProto) -> np.ndarray:
        """The external `tensor` as a read-only map of its file: pages are read when used and
        belong to the page cache, so a session given it (onnxruntime's external initializers)
        needs no copy of the weights written anywhere."""
        path, offset = self._place(tensor)
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        shape = tuple(tensor.dims)
        if offset + math.prod(shape) * np.dtype(dtype).itemsize > path.stat().st_size:
            raise OnnxoptError(f"{path.name} ends inside tensor {tensor.name}", "export the model again")
        return np.memmap(path, dtype, "r", offset, shape)

    def _place(self, tensor: onnx.TensorProto) -> tuple[Path, int]:
        info = {e.key: e.value for e in tensor.external_data}
        path = self.files.get(info.get("location", ""))
        if path is None:
            raise OnnxoptError(
                f"tensor {tensor.name} refers to {info.get('location')!r}, not the model's data file",
                "keep the .onnx file and its .data file together, as onnxopt wrote them",
            )
        return path, int(info.get("offset", 0))

    def tensor(self, value: np.ndarray, name: str) -> onnx.TensorProto:
        value = np.ascontiguousarray(value)
        if value.nbytes < SPILL_BYTES:
            return numpy_helper.from_array(value, name)
        with self.scratch.open("ab") as out:
            offset = append_aligned(out, value.tobytes())
        self.spilled += value.nbytes
        dtype = helper.np_dtype_to_tensor_dtype(value.dtype)
        return external_stub(name, dtype, value.shape, self.scratch.name, offset, value.nbytes)


def append_aligned(out, data: bytes) -> int:
    """Write `data` at the next page-aligned offset of `out` (onnxruntime can map such tensors);
    returns that offset."""
    pad = -out.tell() % _ALIGN
    out.write(b"\0" * pad)
    offset = out.tell()
    out.write(data)
    return offset


def external_stub(name: str, data_type: int, dims, location: str, offset: int, length: int):
    """A tensor entry without data that points at `length` bytes of `location` from `offset`."""
    stub = onnx.TensorProto()
    stub.name, stub.data_type = name, data_type
    stub.dims.extend(dims)
    stub.data_location = onnx.TensorProto.EXTERNAL
    for key, val in (("location", location), ("offset", offset), ("length", length)):
        entry = stub.external_data.add()
        entry.key, entry.value = key, str(val)
    return stub


def active() -> WeightStore | None:
    return _STORE.get()


def array(tensor: onnx.TensorProto) -> np.ndarray:
    """The tensor's values, read from the open store's files where it is external."""
    store = _STORE.get()
    return store.array(tensor) if store is not None else numpy_helper.to_array(tensor)


def tensor(value: np.ndarray, name: str) -> onnx.TensorProto:
    """A tensor of `value`: on the open store's scratch file when large, in the graph otherwise."""
    store = _STORE.get()
    return store.tensor(value, name) if store is not None else numpy_helper.from_array(value, name)


@contextlib.contextmanager
def weights_on_disk(folder: Path, locations: set[str]) -> Iterator[WeightStore | None]:
    """A store over `folder`'s data files (`locations`, as the model names them) and a scratch
    file in a temporary folder, open until the block ends; nothing when there are no locations."""
    if not locations:
        yield None
        return
    files = {loc: file_in_folder(folder, folder / loc, "external data file") for loc in locations}
    with temp_dir("weights") as scratch:
        store = WeightStore(files, Path(scratch) / "onnxopt-scratch.data")
        token = _STORE.set(store)
        try:
            yield store
        finally:
            _STORE.reset(token)
