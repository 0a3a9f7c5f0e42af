"""The `onnxopt` command: one small module per subcommand, errors turned into one line and exit 2."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import typer

from onnxopt.cli import bench, eval, export, inspect, optimize, prune, quantize, run
from onnxopt.errors import OnnxoptError, Terminated, first_line, os_error_message
from onnxopt.io.leftovers import clean_stale_temp
from onnxopt.report import render

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


_SIGNALS = {signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "hung up (SIGHUP)"}


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_as_exceptions():
    """SIGTERM and SIGHUP end a run as Ctrl-C does: raised where they land, so staged outputs and
    temporary folders are removed on the way out. Only the main thread can install handlers (an
    embedding program's worker thread keeps the defaults)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    with _signals_as_exceptions():
        try:
            clean_stale_temp()
            return _run(argv)
        except Terminated as exc:
            render.error(f"{_SIGNALS.get(exc.signum, 'stopped')}; nothing was written")
            return 128 + exc.signum


def _run(argv: list[str] | None) -> int:
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
        render.error(os_error_message(exc))
        return 2
    except MemoryError:
        render.error("out of memory; nothing was written (use smaller --batch, --seq-len or --calib values)")
        return 2
    except Exception as exc:
        # A bug of ours or of a library: still one line and exit 2 (outputs are staged, so nothing
        # half-written remains), and the traceback on request, for a report.
        if os.environ.get("ONNXOPT_DEBUG"):
            raise
        message = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
        render.error(
            f"internal error: {message} "
            "(run again with ONNXOPT_DEBUG=1 for the traceback, and please report it)"
        )
        return 2


def entry() -> None:
    sys.exit(main())
