"""The `onnxopt` command: one small module per subcommand, errors turned into one line and exit 2.

Only typer and the configs are imported to build the commands, so `onnxopt --help` and an error
on a missing path answer in a fraction of a second; each command imports its workflow (onnx,
onnxruntime, torch) when it runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import typer

from onnxopt import __version__
from onnxopt.cli import bench, common, eval, export, inspect, optimize, prune, quantize, run, search
from onnxopt.errors import OnnxoptError, Terminated, first_line, os_error_message

app = typer.Typer(
    name="onnxopt",
    help="Export, quantize, prune and benchmark transformer models in ONNX.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: rich's truncated option names at 80 columns (`--trust-remote-co…`) and
    # showed <bool> after every flag.
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)
for name, module in [
    ("export", export),
    ("optimize", optimize),
    ("quantize", quantize),
    ("prune", prune),
    ("bench", bench),
    ("inspect", inspect),
    ("eval", eval),
    ("run", run),
    ("search", search),
]:
    app.command(name)(module.command)


def _version(asked: bool) -> None:
    if asked:
        sys.stdout.write(f"onnxopt {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress: results and errors only."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Every stage on its own line, with times."),
) -> None:
    """Export, quantize, prune and benchmark transformer models in ONNX."""
    common.VERBOSITY.quiet, common.VERBOSITY.verbose = quiet, verbose


def error(message: str) -> None:
    """One line on stderr, no markup surprises, no wrapping."""
    sys.stderr.write(f"onnxopt: error: {message}\n")


_SIGNALS = {signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "hung up (SIGHUP)"}


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_as_exceptions():
    """SIGTERM and SIGHUP end a run as Ctrl-C does: raised where they land, so staged outputs and
    temporary folders are removed on the way out. Only the main thread can install handlers (an
    embedding program's worker thread keeps the defaults). A signal the caller ignores stays
    ignored: `nohup onnxopt ...` must outlive its terminal (the suite once ran under such a parent,
    and a run there ended at the hang-up nohup was meant to survive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = [sig for sig in _SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    common.VERBOSITY.quiet = common.VERBOSITY.verbose = False
    common.RESUMABLE = common.Resumable()
    with _signals_as_exceptions():
        try:
            from onnxopt.io.leftovers import clean_stale_temp

            clean_stale_temp()
            return _run(argv)
        except Terminated as exc:
            error(f"{_SIGNALS.get(exc.signum, 'stopped')}; {common.RESUMABLE.note()}")
            return 128 + exc.signum


def _run(argv: list[str] | None) -> int:
    try:
        # Not standalone: typer returns an exit code instead of exiting, and turns Ctrl-C into 130.
        code = app(args=argv, prog_name="onnxopt", standalone_mode=False)
        if code == 130:
            error(f"interrupted; {common.RESUMABLE.note()}")
        return code if isinstance(code, int) else 0
    except OnnxoptError as exc:
        error(str(exc))
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
        error(f"{exc.format_message()} (see `{where}`)")
        return 2
    except (KeyboardInterrupt, typer.Abort):
        error(f"interrupted; {common.RESUMABLE.note()}")
        return 130
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("onnxruntime"):
        # onnxruntime comes from an extra so that the CPU and GPU builds never overwrite each other.
        error(
            f"{exc.name} is not installed (pip install 'onnxopt[cpu]', or 'onnxopt[gpu]' for CUDA; "
            "`make install` does it)"
        )
        return 2
    if isinstance(exc, OSError):  # a full disk, a vanished folder, a permission: the machine, not a bug
        error(os_error_message(exc))
        return 2
    if isinstance(exc, MemoryError):
        error("out of memory; nothing was written (use smaller --batch, --seq-len or --calib values)")
        return 2
    # A bug of ours or of a library: still one line and exit 2 (outputs are staged, so nothing
    # half-written remains), and the traceback on request, for a report.
    if os.environ.get("ONNXOPT_DEBUG") or common.VERBOSITY.verbose:
        raise exc
    message = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
    error(
        f"internal error: {message} (run again with ONNXOPT_DEBUG=1 for the traceback, and please report it)"
    )
    return 2


def entry() -> None:
    sys.exit(main())
