"""Content hashes: what a step's result depends on, for skipping unchanged work (recipes, search)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from onnxopt.io import model_files


def file_hash(paths: list[Path]) -> str:
    """sha256 over the files' names and contents, in name order."""
    sha = hashlib.sha256()
    for path in sorted(paths):
        sha.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def model_hash(folder: Path) -> str:
    """What a model is: its graph and weights (not the manifest, which eval and bench annotate)."""
    return file_hash([f for f in model_files.graph_files(folder) if f.is_file()])
