"""External weights moved tensor by tensor: never the whole model in memory.

torch's exporter writes a model past 2 GB as one file per tensor; `consolidate` gathers them into
`<model>.data` (the layout every onnxopt writer uses and onnxruntime-genai expects), copying each
tensor in chunks, so a 4 GB Llama-3.2-1B-shaped export is gathered in tens of MB of memory where
optimum's own gathering loads the whole model beside the PyTorch one (9.7 GB peak, issue 28).
(onnxopt's export now writes `<model>.data` itself: export/large_export.py.) `externalize` moves
an inline model's weights out, `write_streamed` and `write_mapped` write a graph with its weights
one tensor at a time, `weights_as_inputs` gives shape inference the graph without them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxopt.io import weight_store
from onnxopt.io.files import file_in_folder

_CHUNK = 64 << 20


def data_file(path: Path) -> Path:
    """Where a model's weights go when they are external: `<name>.data` beside it."""
    return path.with_name(path.name + ".data")


def has_external(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def consolidate(path: Path) -> int:
    """Gather the external tensors of the model at `path` into `data_file(path)`; returns how many
    tensors moved. The per-tensor files are removed once the model points at the gathered file."""
    model = onnx.load(str(path), load_external_data=False)
    target = data_file(path)
    folder = path.parent
    moved, sources = 0, set()
    places = {_location(t) for t in _external_tensors(model)}
    if not places or places == {target.name}:
        return 0  # nothing to gather, or written there already (large_export.py: weights_beside)
    if target.name in places:
        raise ValueError(f"{path} keeps some weights in {target.name} and others elsewhere")
    with target.open("wb") as out:
        for tensor in _external_tensors(model):
            info = {e.key: e.value for e in tensor.external_data}
            source = file_in_folder(folder, folder / info["location"], "external data file")
            offset = weight_store.append_aligned(out, b"")
            length = _copy(source, int(info.get("offset", 0)), info.get("length"), out)
            _point_at(tensor, target.name, offset, length)
            sources.add(source)
            moved += 1
    onnx.save_model(model, str(path))
    for source in sources:
        source.unlink()
    return moved


def externalize(path: Path) -> None:
    """Rewrite the inline model at `path` as `path` + `data_file(path)`: its weights of 1 KiB or
    more go to the data file, one at a time. Past a gigabyte of weights this is what lets every
    later step (quantize, prune, eval) hold the graph and map the weights instead of parsing the
    whole protobuf: quantize --int4 of the Qwen2.5-0.5B shape (1.6 GB inline) peaked at 5.1 GB
    while the model loaded, 2.8x its size, before any pass ran (issue 28)."""
    model = onnx.load(str(path), load_external_data=False)
    if has_external(model):
        raise ValueError(f"{path} already keeps weights outside it")
    write_streamed(without_initializers(model), model.graph.initializer, path)


def _location(tensor: onnx.TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def _external_tensors(model: onnx.ModelProto):
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                yield attr.t


def _copy(source: Path, offset: int, length: str | None, out) -> int:
    left = int(length) if length is not None else source.stat().st_size - offset
    total = left
    with source.open("rb") as f:
        f.seek(offset)
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise ValueError(f"{source.name} ends before its tensor does")
            out.write(chunk)
            left -= len(chunk)
    return total


def _point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def safetensors_parameters(folder: Path) -> int | None:
    """Parameters in a folder's safetensors files, read from their headers (no weights loaded);
    None when the folder has none."""
    total, found = 0, False
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
        found = True
    return total if found else None


def without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of everything but the graph's initializers: nodes, inputs, outputs, value_info,
    opsets and metadata (kilobytes, where `CopyFrom` would copy every weight too)."""
    out = onnx.ModelProto()
    _copy_fields(model, out, skip="graph")
    _copy_fields(model.graph, out.graph, skip="initializer")
    return out


def _copy_fields(src, dst, skip: str) -> None:
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if _repeated(field):
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _repeated(field) -> bool:
    # protobuf 6 has `is_repeated`; older ones only `label`
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED


def weights_as_inputs(model: onnx.ModelProto, threshold: int = 1024) -> onnx.ModelProto:
    """`model` with each initializer of `threshold` bytes or more, or kept on disk, turned into a
    graph input of its type and shape: what shape inference needs, in kilobytes, and nothing it
    could try to read (symbolic inference read a 3.5 KB norm weight from model.onnx.data through
    onnx, relative to the working directory, and failed on every model with external data). Small
    ones (shapes, axes) are kept: inference reads them."""
    out = without_initializers(model)
    inputs = {i.name for i in model.graph.input}
    for tensor in model.graph.initializer:
        if _stored_bytes(tensor) < threshold:
            out.graph.initializer.append(tensor)
            continue
        if tensor.name not in inputs:  # an initializer may be listed as an input too (IR < 4)
            typed = helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            out.graph.input.append(typed)
    return out


def _stored_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 1 << 62  # already on disk: never copied in
    return tensor.ByteSize()


def write_streamed(graph: onnx.ModelProto, weights, path: Path, threshold: int = 1024) -> Path:
    """Write `graph` (a model without initializers, see `without_initializers`) to `path` with the
    tensors of `weights` it reads: each of `threshold` bytes or more appended to `data_file(path)`
    one at a time, the rest inline. `graph` gets the initializer entries; `weights` is not changed.
    Memory stays at one tensor, where onnx.save_model needs a full copy of a model first (it strips
    the raw data of what it saves). External tensors are read through the open weight store; with
    none open they are kept as references, which must then resolve from `path`'s folder."""
    store = weight_store.active()
    used = graph_reads(graph.graph)
    target = data_file(path)
    with target.open("wb") as out:
        for tensor in weights:
            if tensor.name not in used:
                continue
            external = tensor.data_location == onnx.TensorProto.EXTERNAL
            if (external and store is None) or (not external and tensor.ByteSize() < threshold):
                graph.graph.initializer.append(tensor)  # a reference, or small: kept as it is
                continue
            if external:
                raw = store.array(tensor).tobytes()
            elif tensor.HasField("raw_data"):
                raw = tensor.raw_data
            else:
                raw = weight_store.array(tensor).tobytes()
            offset = weight_store.append_aligned(out, raw)
            place = (target.name, offset, len(raw))
            graph.graph.initializer.append(
                weight_store.external_stub(tensor.name, tensor.data_type, tensor.dims, *place)
            )
            del raw
    onnx.save_model(graph, str(path))
    return path


GIVEN_IN_MEMORY = "weights-given-in-memory"  # an empty file a probe's weight entries name


def write_mapped(graph: onnx.ModelProto, weights, path: Path) -> dict[str, np.ndarray]:
    """Write `graph` (a model without initializers) to `path` with the tensors of `weights` it
    reads, where an external one becomes an entry naming an empty file beside `path` and comes back
    as a read-only map of the open weight store's file, for onnxruntime's shared initializers
    (runtime/sessions.py: make_session). A probe of a 4.7 GB Llama-3.2-1B shape then writes
    kilobytes, where write_streamed copied every weight for each of prune's 32 re-fits (issue 28:
    8.8 GB of disk, then full, after 16). Were onnxruntime to read an entry anyway, the empty file
    would fail the session, never feed it other bytes."""
    store = weight_store.active()
    used = graph_reads(graph.graph)
    mapped: dict[str, np.ndarray] = {}
    (path.parent / GIVEN_IN_MEMORY).touch()
    for tensor in weights:
        if tensor.name not in used:
            continue
        if tensor.data_location != onnx.TensorProto.EXTERNAL or store is None:
            graph.graph.initializer.append(tensor)
            continue
        mapped[tensor.name] = store.mapped(tensor)
        length = mapped[tensor.name].nbytes
        graph.graph.initializer.append(
            weight_store.external_stub(tensor.name, tensor.data_type, tensor.dims, GIVEN_IN_MEMORY, 0, length)
        )
    onnx.save_model(graph, str(path))
    return mapped


def graph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of `graph` or of its subgraphs (If, Loop) reads, and its outputs."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= graph_reads(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    names |= graph_reads(sub)
    return names
