"""The OUT of a run that resumes (a recipe, a search): checked before any work. It may be new,
empty, or one this kind of run made (its mark file says so); never the input, inside it, or
holding it."""

from __future__ import annotations

from pathlib import Path

from onnxopt.errors import OnnxoptError
from onnxopt.io.yaml_lines import echo


def check_run_folder(out: Path, mark: str, kind: str, model: Path | None, hint: str) -> None:
    """Refuse OUT when it is not a folder, or a non-empty folder without `mark` (`kind`: what makes
    it, for the message), or when it overlaps `model`'s folder. `hint` closes the not-ours case."""
    if "\0" in str(out):
        raise OnnxoptError(f"output {echo(out)} is not a valid path", "choose another folder with -o")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OnnxoptError(
                f"output {echo(out)} exists and is not a folder", "choose another folder with -o"
            )
        if not (out / mark).is_file() and any(out.iterdir()):
            raise OnnxoptError(
                f"{echo(out)} is not a {kind} output folder (no {mark}) and is not empty", hint
            )
    if model is not None and model.exists():
        source, target = model.resolve(), out.resolve()
        if target == source or target.is_relative_to(source) or source.is_relative_to(target):
            raise OnnxoptError(
                f"output {echo(out)} is, contains or lies inside the input model folder {echo(model)}",
                "choose an output folder apart from the model",
            )
