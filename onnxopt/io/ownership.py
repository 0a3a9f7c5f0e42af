"""Whether onnxopt made a folder, and so may replace it whole (--overwrite, a recipe's step folder,
a search's best model).

A file that is merely named `onnxopt.json` proves nothing: an empty one, or one that is not JSON,
once let `--overwrite` delete a user's folder. Ownership is a manifest onnxopt wrote: a JSON object
with the fields every manifest has (onnxopt.io.manifest) and, since the manifest records them, no
entry in the folder that it does not list. Manifests written before the list existed are accepted
on their fields alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from onnxopt.errors import cut, first_line
from onnxopt.io.manifest import FILES_KEY, MANIFEST_NAME, TOOL, TOOL_KEY

# A manifest holds a few steps' records; one past this size is not one onnxopt wrote.
_MANIFEST_LIMIT = 16 << 20
# The fields every manifest onnxopt has written carries, and their JSON types.
_FIELDS = {"source": str, "task": str, "opset": int, "libraries": dict, "steps": list}


def made_by_onnxopt(folder: Path) -> str | None:
    """None when `folder` holds a manifest onnxopt wrote and nothing that manifest does not list;
    otherwise why not, as a phrase that names no folder, for a line such as f"output {folder} is
    not an onnxopt output: {why}" ("onnxopt.json is not a manifest onnxopt wrote (not JSON)")."""
    path = folder / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        return f"no {MANIFEST_NAME}"
    if path.is_symlink() or not path.is_file():
        return f"{MANIFEST_NAME} is not a regular file"
    data, why = _read(path)
    why = why if data is None else _fields_wrong(data)
    if why is not None:
        return f"{MANIFEST_NAME} is not a manifest onnxopt wrote ({why})"
    return _unlisted(folder, data.get(FILES_KEY))


def _read(path: Path) -> tuple[dict | None, str | None]:
    try:
        if path.stat().st_size > _MANIFEST_LIMIT:
            return None, f"over {_MANIFEST_LIMIT >> 20} MiB"
        data = json.loads(path.read_bytes())
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or first_line(exc, 60)}"
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return None, "not JSON"
    if not isinstance(data, dict):
        return None, f"a JSON {type(data).__name__}, not an object"
    return data, None


def _fields_wrong(data: dict) -> str | None:
    if TOOL_KEY in data and data[TOOL_KEY] != TOOL:
        return f"{TOOL_KEY} is {cut(repr(data[TOOL_KEY]), 40)}"
    for key, kind in _FIELDS.items():
        # bool is an int to isinstance; an opset of `true` is not one onnxopt wrote.
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            return f"no {key!r}" if key not in data else f"{key!r} is not a JSON {kind.__name__}"
    if TOOL not in data["libraries"]:
        return f"'libraries' lacks {TOOL!r}"
    if not all(isinstance(s, dict) and isinstance(s.get("step"), str) for s in data["steps"]):
        return "a step without a name"
    files = data.get(FILES_KEY)
    if FILES_KEY in data and not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        return f"{FILES_KEY!r} is not a list of names"
    return None


def _unlisted(folder: Path, files: list[str] | None) -> str | None:
    """What the folder holds beyond the manifest's list (None for a manifest without one)."""
    if files is None:
        return None
    try:
        extra = sorted(e.name for e in folder.iterdir() if e.name not in {*files, MANIFEST_NAME})
    except OSError as exc:
        return f"it cannot be listed ({exc.strerror or first_line(exc, 60)})"
    if not extra:
        return None
    more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
    return f"it holds {cut(extra[0], 60)}{more}, which its {MANIFEST_NAME} does not list"
