"""What several commands share: the --verify-loading option and its report."""

from __future__ import annotations

import typer

from onnxopt.report import render

VERIFY_LOADING = typer.Option(
    False,
    "--verify-loading",
    help="Load OUTPUT with optimum's ORTModelFor<Task> and compare with the input.",
)


def show_verified(result) -> None:
    """The --verify-loading line, when the workflow ran it (on its staged folder)."""
    if getattr(result, "verified", None) is not None:
        render.verify_result(result.verified)
