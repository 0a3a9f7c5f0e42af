"""A GGUF file's header, read by onnxopt itself with every count checked against the file's size,
before torch, transformers or `gguf` are imported. The `gguf` reader trusts the header's counts:
a 134-byte file declaring a 2^62-element array ran it out of memory, and a truncated one ended in
IndexError. The layout (github.com/ggml-org/ggml, docs/gguf.md): magic, version, tensor count, KV
count, the KV pairs, the tensor infos, then the tensors' data from an aligned offset.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from onnxopt.errors import OnnxoptError, cut, first_line

VERSIONS = (2, 3)  # those the `gguf` reader reads; version 1 had 32-bit counts
MAX_KEY = 65535  # the spec's longest key; tensor names get the same cap
MAX_STRING = 16 << 20  # a chat template is kilobytes; nothing in a header needs 16 MiB
# Array items over the whole metadata: the largest vocabularies (tokens, merges, scores, types) sum
# to about a million, and transformers keeps each item as a Python object (~100 bytes each).
MAX_ITEMS = 1 << 22
MAX_DEPTH = 3  # arrays of arrays nest; deeper than this is no model's metadata
MAX_DIMS = 4  # GGML_MAX_DIMS
MIN_KV = 8 + 1 + 4 + 1  # key length, a one-byte key, value type, a one-byte value
MIN_TENSOR = 8 + 1 + 4 + 4 + 8  # name length, a one-byte name, n_dims, type, offset
DEFAULT_ALIGNMENT = 32
STRING, ARRAY = 8, 9
# Value types' struct formats (little-endian), by GGUF type id; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_QK_K = 256
# GGML tensor types: (elements per block, bytes per block), as ggml's type traits (and gguf-py's
# GGML_QUANT_SIZES) give them; an id not here cannot be sized, so it is refused.
GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (_QK_K, 84), 11: (_QK_K, 110), 12: (_QK_K, 144), 13: (_QK_K, 176),
    14: (_QK_K, 210), 15: (_QK_K, 292), 16: (_QK_K, 66), 17: (_QK_K, 74), 18: (_QK_K, 98),
    19: (_QK_K, 50), 20: (32, 18), 21: (_QK_K, 110), 22: (_QK_K, 82), 23: (_QK_K, 136),
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (_QK_K, 56), 30: (1, 2),
    34: (_QK_K, 54), 35: (_QK_K, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip
_HINT = "the file is damaged or not a GGUF model; download or convert it again"


@dataclass(frozen=True)
class Array:
    """A metadata array, kept as its item type and length: no check needs the items themselves."""

    item_type: int
    count: int


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # GGML order: dims[0] is the innermost (a weight's input features)
    type: int
    offset: int  # from the start of the data section
    nbytes: int


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, object]
    tensors: dict[str, Tensor]
    data_offset: int
    size: int


class _Cursor:
    """Reads forward through the mapped file; every read is checked against the bytes left."""

    def __init__(self, data, shown: str):
        self.data, self.shown, self.pos, self.items = data, shown, 0, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def need(self, nbytes: int, what: str) -> None:
        if nbytes > self.left():
            raise OnnxoptError(
                f"GGUF file {self.shown} is truncated or inconsistent: {what} needs {nbytes} bytes "
                f"at byte {self.pos}, but the file ends {self.left()} bytes later",
                _HINT,
            )

    def scalar(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self, what: str, cap: int = MAX_STRING) -> str:
        length = self.scalar("Q", f"the length of {what}")
        self.need(length, f"{what} ({length} bytes)")
        if length > cap:
            raise OnnxoptError(f"GGUF file {self.shown}: {what} is {length} bytes, over {cap}", _HINT)
        start, self.pos = self.pos, self.pos + length
        return bytes(self.data[start : self.pos]).decode("utf-8", errors="replace")


def read_header(path: Path) -> GgufHeader:
    """The header of the GGUF file at `path`, or an OnnxoptError naming what is wrong with it."""
    shown = cut(str(path))
    try:
        return _read(path, shown)
    except OSError as exc:
        reason = exc.strerror or first_line(exc)
        raise OnnxoptError(f"cannot read GGUF file {shown}: {reason}", "check the file") from exc


def _read(path: Path, shown: str) -> GgufHeader:
    with open(path, "rb") as file:
        magic = file.read(4)
        if magic != b"GGUF":
            raise OnnxoptError(f"{shown} is not a GGUF file (it starts {magic!r}, not b'GGUF')", _HINT)
        size = file.seek(0, 2)
        if size < 4 + 4 + 8 + 8:
            raise OnnxoptError(
                f"GGUF file {shown} is truncated: {size} bytes, less than a GGUF header", _HINT
            )
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(_Cursor(data, shown), size)


def _parse(cur: _Cursor, size: int) -> GgufHeader:
    cur.pos = 4  # past the magic, checked by read_header
    version = cur.scalar("I", "the version")
    if version not in VERSIONS:
        # llama.cpp also writes big-endian files (for s390x); transformers reads little-endian only.
        order = (
            " (a big-endian file)" if int.from_bytes(struct.pack("<I", version), "big") in VERSIONS else ""
        )
        raise OnnxoptError(
            f"GGUF file {cur.shown} has version {version}{order}; onnxopt reads versions 2 and 3",
            "convert it again with a current llama.cpp (convert_hf_to_gguf.py)",
        )
    tensor_count, kv_count = cur.scalar("Q", "the tensor count"), cur.scalar("Q", "the KV count")
    floor = kv_count * MIN_KV + tensor_count * MIN_TENSOR
    if floor > cur.left():
        raise OnnxoptError(
            f"GGUF file {cur.shown} is truncated or inconsistent: it declares {kv_count} metadata "
            f"entries and {tensor_count} tensors, which need at least {floor} bytes; {cur.left()} are left",
            _HINT,
        )
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = cur.string("a metadata key", MAX_KEY)
        if key in metadata:
            raise OnnxoptError(f"GGUF file {cur.shown} has metadata key {cut(key)!r} twice", _HINT)
        metadata[key] = _value(cur, cur.scalar("I", f"the type of {cut(key)}"), cut(key), 0)
    alignment = _alignment(cur, metadata)
    tensors = {}
    for _ in range(tensor_count):
        tensor = _tensor_info(cur)
        if tensor.name in tensors:
            raise OnnxoptError(f"GGUF file {cur.shown} has tensor {cut(tensor.name)} twice", _HINT)
        tensors[tensor.name] = tensor
    data_offset = -(-cur.pos // alignment) * alignment
    for tensor in tensors.values():
        _check_data(cur.shown, tensor, data_offset, alignment, size)
    return GgufHeader(version, metadata, tensors, data_offset, size)


def _value(cur: _Cursor, kind: int, what: str, depth: int):
    if kind in _SCALARS:
        return cur.scalar(_SCALARS[kind], what)
    if kind == STRING:
        return cur.string(what)
    if kind != ARRAY:
        raise OnnxoptError(f"GGUF file {cur.shown}: {what} has unknown value type {kind}", _HINT)
    if depth >= MAX_DEPTH:
        raise OnnxoptError(f"GGUF file {cur.shown}: {what} nests arrays deeper than {MAX_DEPTH}", _HINT)
    item_type, count = cur.scalar("I", f"the item type of {what}"), cur.scalar("Q", f"the length of {what}")
    cur.items += count
    if cur.items > MAX_ITEMS:
        raise OnnxoptError(
            f"GGUF file {cur.shown}: array {what} has {count} items, over the {MAX_ITEMS} onnxopt "
            "reads in a header's arrays; the largest vocabularies hold about a million",
            _HINT,
        )
    if item_type in _SCALARS:  # fixed-size items: sized and skipped without a loop
        cur.need(count * struct.calcsize(_SCALARS[item_type]), f"array {what} ({count} items)")
        cur.pos += count * struct.calcsize(_SCALARS[item_type])
    else:
        # Each string or inner array takes at least its 8-byte length: a lying count ends here.
        cur.need(count * (8 if item_type == STRING else 12), f"array {what} ({count} items)")
        for _ in range(count):
            _value(cur, item_type, f"an item of {what}", depth + 1)
    return Array(item_type, count)


def _alignment(cur: _Cursor, metadata: dict) -> int:
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise OnnxoptError(
            f"GGUF file {cur.shown}: general.alignment is {alignment!r}, not a power of two", _HINT
        )
    return alignment


def _tensor_info(cur: _Cursor) -> Tensor:
    name = cur.string("a tensor name", MAX_KEY)
    shown = cut(name)
    n_dims = cur.scalar("I", f"the dimension count of tensor {shown}")
    if n_dims > MAX_DIMS:
        raise OnnxoptError(
            f"GGUF file {cur.shown}: tensor {shown} has {n_dims} dimensions, more than GGML's {MAX_DIMS}",
            _HINT,
        )
    dims = tuple(cur.scalar("Q", f"the dimensions of tensor {shown}") for _ in range(n_dims))
    kind = cur.scalar("I", f"the type of tensor {shown}")
    offset = cur.scalar("Q", f"the offset of tensor {shown}")
    if kind not in GGML_BLOCKS:
        raise OnnxoptError(
            f"GGUF file {cur.shown}: tensor {shown} has GGML type {kind}, which onnxopt cannot size",
            "convert the model with a common quantization (F32, F16, Q8_0, Q4_K, ...)",
        )
    block, block_bytes = GGML_BLOCKS[kind]
    if dims and dims[0] % block:
        raise OnnxoptError(
            f"GGUF file {cur.shown}: tensor {shown}'s first dimension {dims[0]} is not a multiple "
            f"of its type's block of {block}",
            _HINT,
        )
    elements = 1
    for dim in dims:
        elements *= dim
    return Tensor(name, dims, kind, offset, elements // block * block_bytes)


def _check_data(shown: str, tensor: Tensor, data_offset: int, alignment: int, size: int) -> None:
    if tensor.offset % alignment:
        raise OnnxoptError(
            f"GGUF file {shown}: tensor {cut(tensor.name)}'s offset {tensor.offset} is not aligned "
            f"to {alignment} bytes",
            _HINT,
        )
    end = data_offset + tensor.offset + tensor.nbytes
    if end > size:
        raise OnnxoptError(
            f"GGUF file {shown} is truncated or inconsistent: tensor {cut(tensor.name)} "
            f"{list(tensor.dims)} needs bytes up to {end}, but the file has {size}",
            _HINT,
        )
