"""What several commands share: the --verify-loading option and its report."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import render

VERIFY_LOADING = typer.Option(
    False,
    "--verify-loading",
    help="Load OUTPUT with optimum's ORTModelFor<Task> and compare with the input.",
)


def verify_if_asked(asked: bool, out: Path, reference: Path | None) -> None:
    if asked:
        from ..verify import verify_output

        render.verify_result(verify_output(out, reference))
