"""Reading and writing ONNX models and the folders that hold them.

A model folder holds `model.onnx` (plus its external data, if any), the tokenizer and config
files copied from the source, and the manifest. Commands accept either a folder or an .onnx file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt.errors import OnnxoptError, cut, first_line, shorten
from onnxopt.io import files, parts, weight_store
from onnxopt.io.files import check_folder_files, file_in_folder, regular_file
from onnxopt.io.genai_config import write_genai_config
from onnxopt.io.manifest import MANIFEST_NAME, Manifest
from onnxopt.io.saving import (
    MODEL_FILE,
    runtime_max_ir_version,
    runtime_max_opset,
)

_FLOAT_TYPES = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
)


@dataclass
class ModelRef:
    """Where a model lives: its .onnx file and the folder of its tokenizer/config/manifest (if any)."""

    onnx_path: Path
    folder: Path | None

    @property
    def name(self) -> str:
        return str(self.folder if self.folder is not None else self.onnx_path)

    @property
    def manifest(self) -> Manifest | None:
        return Manifest.load(self.folder) if self.folder is not None else None

    def size_bytes(self) -> int:
        """Size on disk of the model file and its external data files."""
        total = self.onnx_path.stat().st_size
        for loc in external_locations(self.onnx_path):
            data = self.onnx_path.parent / loc
            if data.is_file():
                total += data.stat().st_size
        return total

    def derived_manifest(self, model: onnx.ModelProto) -> Manifest:
        """The manifest a model made from this one starts from: ours, or a new one if it has none."""
        return self.manifest or Manifest(source=str(self.onnx_path), task="unknown", opset=main_opset(model))

    def has_tokenizer(self) -> bool:
        return self.folder is not None and any(
            (self.folder / name).is_file()
            for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
        )


def main_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def resolve(path: Path) -> ModelRef:
    """Turn a user's DIR|FILE argument into a ModelRef, with a clear error when it is not a model.
    Every file onnxopt may read or copy from the folder is checked here, before any work: a
    regular file inside the folder (onnxopt.io.files)."""
    if not path.exists():
        raise OnnxoptError(
            f"{cut(str(path))} does not exist",
            "give a model folder made by `onnxopt export` or an .onnx file",
        )
    if path.is_dir():
        check_folder_files(path)
        onnx_path = path / MODEL_FILE
        if not onnx_path.is_file():
            candidates = sorted(p.name for p in path.glob("*.onnx"))
            if len(candidates) == 1:
                onnx_path = path / candidates[0]
            elif parts.in_parts(path):
                raise parts.refusal(path)
            else:
                raise OnnxoptError(
                    f"{cut(str(path))} holds no {MODEL_FILE}",
                    "run `onnxopt export -o DIR` first, or point at the .onnx file itself",
                )
        return ModelRef(onnx_path=onnx_path, folder=path)
    regular_file(path, "model file")
    folder = path.parent if (path.parent / MANIFEST_NAME).is_file() else None
    if folder is not None:
        check_folder_files(folder)
    return ModelRef(onnx_path=path, folder=folder)


def load(ref: ModelRef, load_weights: bool = True) -> onnx.ModelProto:
    """Parse the model, turning protobuf and file errors into one-line messages."""
    path = ref.onnx_path
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, or RuntimeWarning-like errors for garbage
        raise OnnxoptError(
            f"{path} is not a readable ONNX model ({type(exc).__name__})",
            "the file may be truncated or not ONNX; export it again with `onnxopt export`",
        ) from exc
    if not model.graph.node:
        raise OnnxoptError(
            f"{path} is not a readable ONNX model (it has no graph nodes)",
            "the file may be truncated or not ONNX; export it again with `onnxopt export`",
        )
    if not model.graph.output:
        raise OnnxoptError(f"{path} has no graph outputs", "a model must produce at least one output")
    _check_text(model, path)
    check_versions(model, path)
    locations = _external_locations_of(model)
    _check_external_locations(locations, path)
    if load_weights and locations:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise OnnxoptError(
                f"cannot read the external weights of {path}: {first_line(exc, 200)}",
                "keep the .onnx file and its .data files together in one folder",
            ) from exc
    if load_weights:
        check_finite(model, path)
    return model


def _check_text(model: onnx.ModelProto, path: Path) -> None:
    """ONNX's string fields are proto2: bytes that are not UTF-8 come back as `bytes`, not `str`, and
    would break every later step that reads a name. Refuse them here, saying where."""
    graph = model.graph
    fields = [("opset domain", o.domain) for o in model.opset_import]
    for node in graph.node:
        fields += [("op type", node.op_type), ("node name", node.name), ("domain", node.domain)]
        fields += [("tensor name", t) for t in (*node.input, *node.output)]
        fields += [("attribute name", a.name) for a in node.attribute]
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        fields += [("tensor name", v.name) for v in values]
    for what, value in fields:
        if not isinstance(value, str):
            raise OnnxoptError(
                f"{path} is not a readable ONNX model (a {what} is not valid UTF-8: {bytes(value)[:40]!r})",
                "the file is corrupt; export it again with `onnxopt export`",
            )


def _check_external_locations(locations: set[str], path: Path) -> None:
    """External data must live beside the model: a location that leaves the folder (absolute, or
    through ..) would read any file on the machine, so it is refused; so is one that is not a
    regular file (a FIFO would block the load forever)."""
    folder = path.parent.resolve()
    for location in sorted(locations):
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise OnnxoptError(
                f"{path} refers to external data outside its folder: {shorten(location)}",
                "external data files must sit in the model's folder; refusing to read elsewhere",
            )
        if (folder / location).exists():
            file_in_folder(folder, folder / location, "external data file")


def check_finite(model: onnx.ModelProto, path: Path) -> None:
    """Refuse NaN or infinite weights, naming the first such tensor: they poison calibration,
    quantization scales and every output."""

    for tensor in model.graph.initializer:
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        try:
            values = weight_store.array(tensor)  # external ones from an open store, one at a time
        except Exception as exc:
            raise OnnxoptError(
                f"{path}: weight {tensor.name!r} is malformed ({first_line(exc, 120)})",
                "its data does not match its shape or type; export the model again",
            ) from exc
        if values.size and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            raise OnnxoptError(
                f"{path}: weight {tensor.name!r} has {bad} non-finite values (NaN or inf)",
                "the model is broken; export it again from a checkpoint with finite weights",
            )


def check_versions(model: onnx.ModelProto, path: Path) -> None:
    """Refuse, with the versions named, a model newer than the installed onnxruntime reads."""
    import onnxruntime as ort

    newest_ir = runtime_max_ir_version()
    if model.ir_version > newest_ir:
        raise OnnxoptError(
            f"{path} has IR version {model.ir_version}; "
            f"onnxruntime {ort.__version__} reads up to {newest_ir}",
            "export it again with this onnxopt, or upgrade onnxruntime",
        )
    opset, newest_opset = main_opset(model), runtime_max_opset()
    if opset > newest_opset:
        raise OnnxoptError(
            f"{path} uses opset {opset}; onnxruntime {ort.__version__} supports up to {newest_opset}",
            f"export it again with --opset {min(newest_opset, 17)} or lower, or upgrade onnxruntime",
        )


def external_locations(path: Path) -> set[str]:
    try:
        return _external_locations_of(onnx.load(str(path), load_external_data=False))
    except Exception:
        return set()


def _external_locations_of(model: onnx.ModelProto) -> set[str]:
    locations = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return locations


def copy_sidecars(
    src_folder: Path | None, dst_folder: Path, model: onnx.ModelProto | None = None
) -> list[str]:
    """Copy tokenizer/config files (and sentence-transformers' module folders) next to the new model,
    already saved in `dst_folder` (`model`, where the caller holds it), and write its
    genai_config.json where it is a decoder."""
    copied = files.copy_sidecars(src_folder, dst_folder, skip={MANIFEST_NAME})
    write_genai_config(dst_folder, model)
    return copied


def folder_size(path: Path) -> int:
    """Size on disk of a model: its .onnx file and external data, or every part's (onnxopt.io.parts)."""
    found = parts.part_files(path if path.is_dir() else None)
    if found is None:
        return resolve(path).size_bytes()
    return sum(ModelRef(file, path).size_bytes() for file in found.values())


def part_ref(folder: Path, part: str = "encoder") -> ModelRef:
    """One part of a folder in parts as a ModelRef: its file, and the folder (manifest, tokenizer,
    saved session settings, which all parts share)."""
    return ModelRef(parts.part_files(folder)[part], folder)


def graph_files(path: Path) -> list[Path]:
    """Every file a model's graphs and weights are read from: the .onnx file(s) and external data,
    of each part for a folder in parts."""
    found = parts.part_files(path if path.is_dir() else None)
    onnx_paths = list(found.values()) if found is not None else [resolve(path).onnx_path]
    files = []
    for onnx_path in onnx_paths:
        files += [onnx_path] + [onnx_path.parent / loc for loc in external_locations(onnx_path)]
    return files
