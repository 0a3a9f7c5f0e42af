"""A search's OUT, claimed before any work: new, empty, or a search of the same model (which it
resumes); never the input, inside it, or holding it; writable. `OUT/search.json` marks it from
the start, so an interrupted first run is resumed into it."""

from __future__ import annotations

import json
from pathlib import Path

from onnxopt.errors import OnnxoptError
from onnxopt.io.leftovers import clean_stale_staging
from onnxopt.io.outputs import check_output_file, write_text_atomic
from onnxopt.io.yaml_lines import echo
from onnxopt.search.trials import MODELS, TRIALS

MARK = "search.json"


def check(out: Path, model: Path, input_hash: str) -> None:
    if "\0" in str(out):
        raise OnnxoptError(f"output {echo(out)} is not a valid path", "choose another folder with -o")
    if out.is_symlink():
        raise OnnxoptError(f"output {echo(out)} is a symbolic link", "give the real folder with -o")
    if out.exists():
        if not out.is_dir():
            raise OnnxoptError(
                f"output {echo(out)} exists and is not a folder", "choose another folder with -o"
            )
        if not (out / MARK).is_file() and any(out.iterdir()):
            raise OnnxoptError(
                f"{echo(out)} is not a search output folder (no {MARK}) and is not empty",
                "choose a new or empty folder with -o",
            )
    source, target = model.resolve(), out.resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise OnnxoptError(
            f"output {echo(out)} is, contains or lies inside the input model folder {echo(model)}",
            "choose an output folder apart from the model",
        )
    check_output_file(out / TRIALS, [model], "-o")
    if (out / MARK).is_file():
        try:
            saved = json.loads((out / MARK).read_text())
        except ValueError:
            saved = {}
        if isinstance(saved, dict) and saved.get("input_hash") not in (None, input_hash):
            raise OnnxoptError(
                f"{echo(out)} holds a search of another model ({echo(saved.get('model'))})",
                "choose another folder with -o",
            )


def start(out: Path, record: dict) -> None:
    """Create OUT with its marker, and remove what killed runs left in it."""
    (out / MODELS).mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out)
    clean_stale_staging(out / MODELS)
    write_text_atomic(out / MARK, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
