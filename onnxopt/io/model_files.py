"""Reading and writing ONNX models and the folders that hold them.

A model folder holds `model.onnx` (plus its external data, if any), the tokenizer and config
files copied from the source, and the manifest. Commands accept either a folder or an .onnx file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxopt.errors import OnnxoptError, cut, first_line, shorten
from onnxopt.io import files
from onnxopt.io.files import check_folder_files, file_in_folder, regular_file
from onnxopt.io.manifest import MANIFEST_NAME, Manifest

_FLOAT_TYPES = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
)

MODEL_FILE = "model.onnx"
_TWO_GB = 2**31


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
        for loc in _external_locations(self.onnx_path):
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
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        try:
            values = numpy_helper.to_array(tensor)
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


def _external_locations(path: Path) -> set[str]:
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


def data_file(path: Path) -> Path:
    """Where `write_model` puts the weights of a large model: `<name>.data` beside it."""
    return path.with_name(path.name + ".data")


def write_model(model: onnx.ModelProto, path: Path) -> None:
    """Write as it is; weights go to `data_file(path)` past 2 GB or when they already were external."""
    if is_large(model) or _has_external(model):
        _to_raw_data(model)
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_file(path).name,
            size_threshold=0,
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


def _has_external(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def copy_sidecars(src_folder: Path | None, dst_folder: Path) -> list[str]:
    """Copy tokenizer/config files (and sentence-transformers' module folders) next to the new model."""
    return files.copy_sidecars(src_folder, dst_folder, skip={MANIFEST_NAME})
