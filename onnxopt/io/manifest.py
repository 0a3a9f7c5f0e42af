"""`onnxopt.json`: where a model folder came from and every step applied to it since."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from onnxopt.errors import OnnxoptError
from onnxopt.io.files import read_json
from onnxopt.io.folder_marks import MANIFEST_NAME, STAGING_MARK
from onnxopt.io.output_files import write_text_atomic

# Written first in every manifest, and the entries of the folder it was staged in: with them
# onnxopt.io.ownership tells a manifest onnxopt wrote, over a folder it alone filled, from a file
# that only bears the name (--overwrite once took an empty onnxopt.json as proof and deleted a folder).
TOOL_KEY, TOOL = "tool", "onnxopt"
FILES_KEY = "files"
_TRACKED_LIBRARIES = ("onnxopt", "onnx", "onnxruntime", "optimum-onnx", "transformers", "torch")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Manifest:
    source: str
    task: str
    opset: int
    libraries: dict[str, str] = field(default_factory=library_versions)
    steps: list[dict[str, Any]] = field(default_factory=list)
    # How to run the model: {"selected": SessionSettings dict, "tuned": {provider: settings dict}},
    # written by `bench --ep auto` and `bench --tune`, read by later `bench` and `eval` runs.
    runtime: dict[str, Any] = field(default_factory=dict)
    # A model in several graphs (onnxopt.io.parts): part name -> file in the folder; empty for one graph.
    parts: dict[str, str] = field(default_factory=dict)
    # The folder's entries besides this file, listed when saved into a staged output (every one
    # onnxopt's); None for a manifest written before the list existed, which later saves keep.
    files: list[str] | None = None

    def add_step(self, name: str, **record: Any) -> None:
        self.steps.append({"step": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})

    def step_names(self) -> list[str]:
        return [s["step"] for s in self.steps]

    def save(self, folder: Path) -> None:
        # Only a staged folder is onnxopt's whole: a saved model folder (bench, eval) may hold
        # what a user put there since, which must not become onnxopt's to delete.
        if (folder / STAGING_MARK).is_file():
            ours = {MANIFEST_NAME, STAGING_MARK}
            self.files = sorted(e.name for e in folder.iterdir() if e.name not in ours)
        data = {TOOL_KEY: TOOL, **asdict(self)}
        if self.files is None:
            del data[FILES_KEY]
        write_text_atomic(folder / MANIFEST_NAME, json.dumps(data, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The folder's manifest, None when it has none; a damaged one is one clear error, never a
        crash further on (a `runtime` that is not a mapping once surfaced as an internal error)."""
        path = folder / MANIFEST_NAME
        if not path.exists() and not path.is_symlink():
            return None
        data = read_json(folder, MANIFEST_NAME)
        try:
            manifest = cls(
                source=str(data["source"]),
                task=str(data["task"]),
                opset=int(data["opset"]),
                libraries=dict(data.get("libraries") or {}),
                steps=[dict(step) for step in data.get("steps") or []],
                runtime=dict(data.get("runtime") or {}),
                parts=dict(data.get("parts") or {}),
                files=[str(f) for f in data[FILES_KEY]] if isinstance(data.get(FILES_KEY), list) else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _damaged(path, f"{type(exc).__name__}: {exc}") from exc
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest.parts.items()):
            raise _damaged(path, "parts holds a value that is not a file name")
        for key in ("selected", "tuned"):
            if not isinstance(manifest.runtime.get(key, {}), dict):
                raise _damaged(path, f"runtime.{key} is not a mapping")
        if not all(isinstance(v, dict) for v in manifest.runtime.get("tuned", {}).values()):
            raise _damaged(path, "runtime.tuned holds a value that is not a mapping")
        return manifest


def _damaged(path: Path, why: str):
    return OnnxoptError(
        f"{path} is damaged ({why[:100]})",
        'delete its "runtime" entry (written by `bench --ep auto` / `--tune`), or export the model again',
    )
