"""What every command shares: its positional model argument, -o, --overwrite and --json, how much
it prints (-q / -v), and the checks that answer before any heavy import (a missing path, say:
`onnxopt quantize missing ...` answers in a fraction of a second, not after loading onnx).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import typer

from onnxopt.errors import OnnxoptError, cut

KW = inspect.Parameter.KEYWORD_ONLY
Progress = Callable[[str, int, int], None]


@dataclass
class Verbosity:
    quiet: bool = False  # results and errors only
    verbose: bool = False  # every stage on its own line, with its time, and tracebacks on internal errors


VERBOSITY = Verbosity()


@dataclass
class Resumable:
    """What a stopped run (a signal, Ctrl-C) leaves: most commands stage their output, so nothing;
    a search or a recipe writes its OUT piece by piece and keeps what it finished there for a
    resume, once OUT carries its mark file (before that, nothing was written)."""

    out: Path | None = None
    mark: str = ""
    kept: str = ""  # what OUT keeps, e.g. "the trials so far"

    def note(self) -> str:
        if self.out is not None and (self.out / self.mark).is_file():
            return f"{self.kept} are kept in {cut(str(self.out))} for a resume (run the same command again)"
        return "nothing was written"


RESUMABLE = Resumable()


def model_argument(help: str = "Model folder (from `onnxopt export`) or .onnx file.") -> inspect.Parameter:
    return inspect.Parameter(
        "model", KW, default=typer.Argument(..., help=help, metavar="MODEL"), annotation=Path
    )


OUTPUT = inspect.Parameter(
    "output",
    KW,
    default=typer.Option(..., "-o", "--output", metavar="OUT", help="Folder to write the result to."),
    annotation=Path,
)
OVERWRITE = inspect.Parameter(
    "overwrite",
    KW,
    default=typer.Option(False, "--overwrite", help="Replace OUTPUT if onnxopt made it."),
    annotation=bool,
)
JSON = inspect.Parameter(
    "json_path",
    KW,
    default=typer.Option(None, "--json", metavar="FILE", help="Also write the result as JSON ('-': stdout)."),
    annotation=Path | None,
)


def existing(path: Path, what: str = "model") -> Path:
    """A path the command reads, checked before anything heavy is imported."""
    if not path.exists() and not path.is_symlink():
        raise OnnxoptError(
            f"{cut(str(path))} does not exist",
            f"give a {what} folder made by `onnxopt export` or an .onnx file",
        )
    return path


def check_json(json_path: Path | None, inputs: list[Path], outputs: tuple[Path, ...] = ()) -> None:
    """--json's path, refused before the work if it would overwrite an input, meets the command's
    output folder (-o), or cannot be written: every command that takes --json calls this first."""
    from onnxopt.io.outputs import check_output_file

    check_output_file(json_path, inputs, "--json", outputs)


@contextlib.contextmanager
def progress(first: str) -> Iterator[Progress]:
    """The report layer's progress, shown at once with `first` (so a line appears before the heavy
    imports of the workflow), as quiet or verbose as asked."""
    from onnxopt.report.console import progress_bar

    with progress_bar(quiet=VERBOSITY.quiet, verbose=VERBOSITY.verbose) as update:
        update(first, 0, 0)
        yield update


def finish(result, json_path: Path | None, show: Callable[[object], None]) -> None:
    """Render a workflow's result and the --verify-loading line if it ran, and write the JSON if
    asked; with `--json -` the tables go to stderr, so stdout carries the JSON alone (for `| jq`)."""
    from onnxopt.report import console, json_out, tables

    with console.tables_on_stderr(json_path is not None and str(json_path) == "-"):
        show(result)
        if getattr(result, "verified", None) is not None:
            tables.verify_result(result.verified)
    if json_path is not None:
        json_out.write(json_path, result)
