"""A search's OUT, claimed before any work: new, empty, or a search of the same model (which it
resumes); never the input, inside it, or holding it; writable; its `best/` (replaced at the end)
onnxopt's whole. `OUT/search.json` marks it from the start, so an interrupted first run is resumed
into it."""

from __future__ import annotations

import json
from pathlib import Path

from onnxopt.errors import OnnxoptError
from onnxopt.io.leftovers import clean_stale_staging
from onnxopt.io.outputs import check_output_file, write_text_atomic
from onnxopt.io.run_folders import check_run_folder
from onnxopt.io.yaml_lines import echo
from onnxopt.search.best import BEST, check_replaceable
from onnxopt.search.trials import MODELS, TRIALS

MARK = "search.json"


def check(out: Path, model: Path, input_hash: str) -> None:
    if out.is_symlink():
        raise OnnxoptError(f"output {echo(out)} is a symbolic link", "give the real folder with -o")
    check_run_folder(out, MARK, "search", model, "choose a new or empty folder with -o")
    check_output_file(out / TRIALS, [model], "-o")
    check_replaceable(out / BEST)
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
