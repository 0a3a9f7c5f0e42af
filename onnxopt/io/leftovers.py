"""What killed runs leave behind, found and removed by the next run.

A run ended by SIGKILL (or a power cut) runs no clean-up, so every folder onnxopt makes carries
the pid of its run: in its name for temporary folders (`onnxopt-<kind>-<pid>-*`), in a marker file
for staged outputs (`.OUT.tmp-<pid>-*/.onnxopt-staging`). A later run removes those whose process
is gone, and nothing else: a folder without onnxopt's name and marker is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from onnxopt.io.folder_marks import MANIFEST_NAME, STAGING_MARK

_STAGED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(-[A-Za-z0-9_]+)?$")
_TEMP = re.compile(r"^onnxopt-[a-z]+-(?P<pid>\d+)-")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale_staging(parent: Path) -> None:
    """Remove staged folders that runs now dead left in `parent`, and put back a previous output a
    killed run had moved aside but not yet replaced. Only folders carrying onnxopt's marker (or
    named as onnxopt names its moved-aside outputs, holding an onnxopt.json) are touched."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = _STAGED.match(entry.name)
            if not match or not entry.is_dir() or entry.is_symlink() or _alive(int(match["pid"])):
                continue
            if match["kind"] == "tmp" and (entry / STAGING_MARK).is_file():
                shutil.rmtree(entry, ignore_errors=True)
            elif match["kind"] == "old" and (entry / MANIFEST_NAME).is_file():
                original = parent / match["name"]
                if original.exists():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.rename(original)


def clean_stale_temp() -> None:
    """Remove `onnxopt-<kind>-<pid>-*` folders in the temporary directory whose run is dead."""
    with contextlib.suppress(OSError):
        for entry in Path(tempfile.gettempdir()).iterdir():
            match = _TEMP.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink() and not _alive(int(match["pid"])):
                shutil.rmtree(entry, ignore_errors=True)


def temp_dir(kind: str) -> tempfile.TemporaryDirectory:
    """A temporary folder named with this process's pid, so a later run can tell a dead run's
    leftovers from a live one's."""
    return tempfile.TemporaryDirectory(prefix=f"onnxopt-{kind}-{os.getpid()}-")
