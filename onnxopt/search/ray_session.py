"""Ray for a search, on onnxopt's terms:

- an --address that nothing answers is refused within seconds, in one line (Ray itself retries
  for minutes, printing a warning every 5 to 30 s);
- Ray's own logs stay off stderr (its Python warnings and logging, its workers' output);
- the signals that stop a run (SIGINT, SIGTERM, SIGHUP) keep the handlers the command installed,
  which ray.init replaces (its C++ SIGTERM handler dumps a stack and aborts: exit 134), and they
  land between Ray's calls, never inside one, where a raised exception became a SystemError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator

from onnxopt.errors import OnnxoptError, cut, first_line
from onnxopt.search.config import SearchConfig
from onnxopt.silence import quiet

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROBE_SECONDS = 3.0  # a cluster's head answers a TCP connect in milliseconds, even across a WAN
# HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 4
_HINT = "check --address: ray://HOST:10001, or auto for the cluster this machine is in"


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise OnnxoptError(
            f"--executor ray needs Ray, which is not installed here ({first_line(exc)})",
            "pip install 'onnxopt[ray]' (`make install` does it), or use --executor local",
        ) from exc
    return ray


@contextlib.contextmanager
def signals_between_calls() -> Iterator[None]:
    """Run Ray calls with the stop signals only recorded, then restore the handlers found on entry
    (undoing any Ray installed meanwhile) and deliver the first signal that arrived to them: the
    CLI's raise Terminated or KeyboardInterrupt here, outside Ray's C code."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals and may set handlers
        return
    previous = {sig: signal.getsignal(sig) for sig in STOPS}
    arrived: list[int] = []
    for sig, handler in previous.items():
        # An ignored signal stays ignored (nohup): Ray's processes started meanwhile inherit it so.
        if handler is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, _frame: arrived.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if arrived:
            _deliver(arrived[0], previous[arrived[0]])


def _deliver(signum: int, handler) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler in (signal.SIG_DFL, None):
        signal.raise_signal(signum)  # the default action, as if it had arrived now


def check_reachable(address: str) -> None:
    """Refuse a HOST:PORT or ray://HOST:PORT address where nothing accepts a TCP connection, or
    what does is no gRPC server (Ray's GCS and client server both are), within PROBE_SECONDS;
    `auto`, `local` and what is not HOST:PORT are left to Ray."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS) as conn:
            speaks = _speaks_grpc(conn)
    except (OSError, OverflowError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else getattr(exc, "strerror", None)
        raise OnnxoptError(
            f"nothing answers at the Ray cluster address {cut(address)} ({reason or first_line(exc)})",
            "is the cluster up (`ray start --head`)? " + _HINT,
        ) from None
    if not speaks:
        raise OnnxoptError(f"{cut(address)} answers, but not as a Ray cluster (no gRPC server)", _HINT)


def _speaks_grpc(conn: socket.socket) -> bool:
    """Whether the server answers HTTP/2's client preface with its SETTINGS frame, as every gRPC
    server does at once: a port that accepts connections but is no Ray made ray.init retry for
    minutes, warning on stderr all along. Under TLS (RAY_USE_TLS) the plain preface proves nothing."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    head = b""
    with contextlib.suppress(OSError):  # a reset or a timeout: no answer, so no gRPC
        conn.sendall(_H2_PREFACE)
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    return len(head) == 9 and head[3] == _H2_SETTINGS


def connect(ray, config: SearchConfig) -> None:
    """The cluster at --address, or a local Ray of --ray-cpus CPUs started for this run."""
    if config.address is not None:
        check_reachable(config.address)
    options = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        # quiet(): Ray's Python side warns too (a ray:// client that times out, say).
        with signals_between_calls(), quiet():
            if config.address is not None:
                ray.init(address=config.address, **options)
            else:
                # "local": a new Ray for this run, even where a cluster's address is on record here.
                ray.init(address="local", num_cpus=config.ray_cpus, include_dashboard=False, **options)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f"the Ray cluster at {cut(config.address)}" if config.address else "a local Ray"
        raise OnnxoptError(f"cannot start or reach {where}: {first_line(exc)}", _HINT) from exc
