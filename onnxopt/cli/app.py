"""The `onnxopt` command: one small module per subcommand, errors turned into one line and exit 2."""

from __future__ import annotations

import os
import sys

import typer

from .. import render
from ..errors import OnnxoptError, first_line
from . import bench, eval, export, inspect, optimize, prune, quantize, run

app = typer.Typer(
    name="onnxopt",
    help="Export, quantize, prune and benchmark transformer models in ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("export")(export.command)
app.command("optimize")(optimize.command)
app.command("quantize")(quantize.command)
app.command("prune")(prune.command)
app.command("bench")(bench.command)
app.command("inspect")(inspect.command)
app.command("eval")(eval.command)
app.command("run")(run.command)


def main(argv: list[str] | None = None) -> int:
    try:
        # Not standalone: typer returns an exit code instead of exiting, and turns Ctrl-C into 130.
        code = app(args=argv, prog_name="onnxopt", standalone_mode=False)
        if code == 130:
            render.error("interrupted; nothing was written")
        return code if isinstance(code, int) else 0
    except OnnxoptError as exc:
        render.error(str(exc))
        return 2
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("onnxruntime"):
            raise
        # onnxruntime comes from an extra so that the CPU and GPU builds never overwrite each other.
        render.error(
            f"{exc.name} is not installed (pip install 'onnxopt[cpu]', or 'onnxopt[gpu]' for CUDA; "
            "`make install` does it)"
        )
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # bad usage: unknown option, missing argument, wrong type
        ctx = getattr(exc, "ctx", None)
        where = (
            f"onnxopt {ctx.info_name} --help"
            if ctx is not None and ctx.parent is not None
            else "onnxopt --help"
        )
        render.error(f"{exc.format_message()} (see `{where}`)")
        return 2
    except (KeyboardInterrupt, typer.Abort):
        render.error("interrupted; nothing was written")
        return 130
    except OSError as exc:  # a full disk, a vanished folder, a permission: the machine, not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        render.error(
            f"{exc.strerror or exc}{where}; nothing was written "
            "(free some space, or choose another output location)"
        )
        return 2
    except Exception as exc:
        # A bug of ours or of a library: still one line and exit 2 (outputs are staged, so nothing
        # half-written remains), and the traceback on request, for a report.
        if os.environ.get("ONNXOPT_DEBUG"):
            raise
        first = first_line(exc, 200)
        render.error(
            f"internal error: {type(exc).__name__}: {first} "
            "(run again with ONNXOPT_DEBUG=1 for the traceback, and please report it)"
        )
        return 2


def entry() -> None:
    sys.exit(main())
