"""`onnxopt.json`: where a model folder came from and every step applied to it since."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_NAME = "onnxopt.json"
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

    def add_step(self, name: str, **record: Any) -> None:
        self.steps.append({"step": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record})

    def step_names(self) -> list[str]:
        return [s["step"] for s in self.steps]

    def save(self, folder: Path) -> None:
        from .outputs import write_text_atomic

        write_text_atomic(folder / MANIFEST_NAME, json.dumps(asdict(self), indent=2, default=str) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        path = folder / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(
                source=data["source"],
                task=data["task"],
                opset=int(data["opset"]),
                libraries=data.get("libraries", {}),
                steps=list(data.get("steps", [])),
                runtime=dict(data.get("runtime") or {}),
            )
        except (ValueError, KeyError, TypeError):
            return None
