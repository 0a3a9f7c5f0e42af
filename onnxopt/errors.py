"""The one exception type users see. The CLI prints it on one line and exits 2."""

from __future__ import annotations

import errno

# Echoed user values (a path, an option, a YAML value) are cut to this many characters, so a
# hostile value costs one short line, never megabytes of terminal.
ECHO_LIMIT = 100


class OnnxoptError(Exception):
    """A problem the user can fix. `message` says what is wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised where the signal lands, so every `finally` and context
    manager on the way out cleans up as it does for Ctrl-C. Not an Exception: nothing may swallow it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, or its type name when the message is empty
    (`str(exc).splitlines()[0]` raises IndexError there, and that once hid the real error)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def shorten(value: object, limit: int = ECHO_LIMIT) -> str:
    """repr() of a user's value, cut to `limit` characters."""
    return cut(repr(value), limit)


def cut(text: str, limit: int = ECHO_LIMIT) -> str:
    """A user's text (a path, say) as it is, cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What to do about the OSErrors a machine raises, by errno; the message itself comes from strerror.
_OS_HINTS = {
    errno.ENOSPC: "free some space, or choose another output location",
    errno.EDQUOT: "free some space under your quota, or choose another output location",
    errno.EROFS: "the file system is read-only; choose another output location",
    errno.EACCES: "check the permissions, or choose another location",
    errno.EPERM: "check the permissions, or choose another location",
    errno.ELOOP: "a symbolic link points back into itself; remove or fix the link",
    errno.EBUSY: "another program is using it; close that program or choose another location",
    errno.ENOENT: "it vanished while onnxopt was working; check that nothing else removes it",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: what the system said, where, and what to do about that errno."""
    where = f" ({cut(str(exc.filename))})" if exc.filename else ""
    reason = exc.strerror or first_line(exc)
    hint = _OS_HINTS.get(exc.errno or -1, "check the path and try again")
    return f"{reason}{where}; nothing was written ({hint})"
