"""`--json FILE` for every command that reports: the workflow's result dataclass as JSON.

The same fields the tables show, for machines; `-` is standard output. Paths become strings,
numpy numbers plain numbers, and values that are not data (onnxruntime objects) are left out.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any

from onnxopt.io.outputs import write_text_atomic


def plain(value: Any) -> Any:
    """`value` as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
        return {k: v for k, v in data.items() if v is not _SKIP}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if plain(v) is not _SKIP}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value if plain(v) is not _SKIP]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item") and getattr(value, "size", 2) == 1:  # a numpy scalar
        return plain(value.item())
    return _SKIP


_SKIP = object()


def write(path: Path, result: Any) -> None:
    write_text_atomic(path, json.dumps(plain(result), indent=2) + "\n")
