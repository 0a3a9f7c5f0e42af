"""Reading text and csv files a line at a time, each line and field bounded.

A hostile data file can hold a single 50 MB field: read whole and tokenized, it took 5.7 GB and
more than 600 s. Here no read holds more than LINE_LIMIT characters, a field past FIELD_LIMIT is
one error naming the file and line, and the text is cut to seq_len x 32 characters before
tokenizing anyway (samples.clip_text). Text scored whole (perplexity) is streamed instead, in
pieces of bounded size (text_pieces), NUL bytes refused by offset.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from onnxopt.errors import OnnxoptError, cut, first_line
from onnxopt.io.files import MIB, size_text

# One sample (a csv field, a line of a text file, a JSON value) is refused past FIELD_LIMIT
# characters, and one line of a table or jsonl file past LINE_LIMIT: no read holds more at once;
# the text is cut to seq_len x 32 characters before tokenizing anyway (samples.clip_text).
FIELD_LIMIT, LINE_LIMIT = MIB, 16 * MIB
_CUT_HINT = "calibration and eval text is cut to seq_len x 32 characters anyway; shorten or split it"


def over_limit(path: Path, number: int, what: str, limit: int) -> OnnxoptError:
    where = f"{cut(str(path))} line {number}"
    return OnnxoptError(f"{where}: {what} is over {size_text(limit)} ({limit:,} characters)", _CUT_HINT)


class _LineTooLong(OnnxoptError):  # with the part of the line that was read
    def __init__(self, path: Path, number: int, limit: int, start: str):
        error = over_limit(path, number, "a line", limit)
        super().__init__(error.message, error.hint)
        self.number, self.start = number, start


def bounded_lines(f: IO[str], path: Path, limit: int) -> Iterator[str]:
    """The lines of an open text file, each read at most `limit` characters deep: a longer line is
    one error naming the file and line, never a string of any size in memory."""
    number = 0
    while True:
        try:
            line = f.readline(limit + 1)
        except UnicodeDecodeError as exc:
            where = f"line {number + 1} or after"  # reads are decoded a buffer at a time
            raise OnnxoptError(f"{cut(str(path))} is not UTF-8 text ({where})", "save it as UTF-8") from exc
        if not line:
            return
        number += 1
        if len(line) > limit and line[-1] not in "\r\n":
            raise _LineTooLong(path, number, limit, line)
        yield line


def read_rows(f: IO[str], path: Path, **options) -> Iterator[list[str]]:
    """csv rows of a file opened with newline="": fields of at most FIELD_LIMIT characters, lines
    of at most LINE_LIMIT, any csv error one OnnxoptError naming the file and line. The csv
    module's field limit is process-wide, so it is set around each row only, and put back."""
    reader = csv.reader(bounded_lines(f, path, LINE_LIMIT), **options)
    while True:
        previous = csv.field_size_limit(FIELD_LIMIT)
        try:
            row = next(reader, None)
        except _LineTooLong as exc:  # most likely one huge field: say so when the line's start shows it
            try:
                list(csv.reader([exc.start], **options))
            except csv.Error:
                raise over_limit(path, exc.number, "a field", FIELD_LIMIT) from exc
            raise
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise over_limit(path, reader.line_num, "a field", FIELD_LIMIT) from exc
            where = f"{cut(str(path))} line {reader.line_num} is not valid csv"
            raise OnnxoptError(f"{where}: {first_line(exc, 80)}", "check its quoting") from exc
        finally:
            csv.field_size_limit(previous)
        if row is None:
            return
        yield row


# --- text read in bounded pieces (perplexity) ---------------------------------------------------

PIECE = 1 << 14  # characters of text tokenized at once


class _NulChecked(io.RawIOBase):
    """A binary file that refuses NUL bytes as it reads them: text has none, and 5 MB of them once
    went to the tokenizer whole (1.7 GB, still running at 180 s)."""

    def __init__(self, f: IO[bytes], path: Path):
        self.f, self.path, self.offset = f, path, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(buffer)
        nul = bytes(memoryview(buffer)[:n]).find(b"\0") if n else -1
        if nul >= 0:
            raise OnnxoptError(
                f"{cut(str(self.path))} looks binary: NUL bytes at offset {self.offset + nul}",
                "give a UTF-8 text file",
            )
        self.offset += n or 0
        return n


def _cut_at_space(part: str, size: int) -> tuple[str, str]:
    """`part` cut before its last run of spaces (a word is not split between two pieces, nor a
    line's trailing spaces kept), and the rest; a part without one is cut where it is, and spaces
    alone are kept only up to `size`."""
    at = max(part.rfind(" "), part.rfind("\t"))
    head = part[:at].rstrip(" \t") if at >= 0 else part
    if not head and len(part) <= size:
        return "", part
    head = head or part
    return head, part[len(head) :]


def _parts(text: IO[str], path: Path, size: int) -> Iterator[str]:
    """Lines of at most `size` characters each: a longer line comes in several parts."""
    number = 0
    while True:
        try:
            part = text.readline(size)
        except UnicodeDecodeError as exc:
            where = f"line {number + 1} or after"  # reads are decoded a buffer at a time
            raise OnnxoptError(f"{cut(str(path))} is not UTF-8 text ({where})", "save it as UTF-8") from exc
        if not part:
            return
        number += part.endswith("\n")
        yield part


def text_pieces(path: Path, size: int = PIECE) -> Iterator[str]:
    """The text of a UTF-8 file in pieces of at most 2 x `size` characters: its lines stripped,
    blank ones skipped, each line after the first led by a blank line (as "\n\n".join(lines)
    reads). A line longer than `size` comes in several pieces, cut at spaces where it has them;
    no read holds more than `size` characters, so a 15 MB line costs what a short one does."""
    with path.open("rb") as raw:
        text = io.TextIOWrapper(io.BufferedReader(_NulChecked(raw, path)), encoding="utf-8")
        started, new_line, carry = False, True, ""
        for part in _parts(text, path, size):
            piece, carry = carry + part, ""
            piece = piece.lstrip() if new_line else piece
            if part.endswith("\n"):
                piece, ends = piece.rstrip(), True
            else:
                (piece, carry), ends = _cut_at_space(piece, size), False
            if piece:
                yield ("\n\n" if started and new_line else "") + piece
                started, new_line = True, False
            new_line = new_line or ends
        if carry.strip():
            yield ("\n\n" if started and new_line else "") + carry.rstrip()
