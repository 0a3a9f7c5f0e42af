"""Text samples for calibration and evaluation, from files, `datasets`, or the embedded corpus.

A sample is a string, or a pair of strings for sentence-pair models. Sources are read lazily and
cut at `limit`, so a large file costs no more than the samples taken from it.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path

from onnxopt.data.textio import FIELD_LIMIT, LINE_LIMIT, bounded_lines, over_limit, read_rows
from onnxopt.errors import OnnxoptError, cut, first_line, shorten
from onnxopt.io.files import regular_file

Sample = str | tuple[str, str]
_TEXT_SUFFIXES = {".txt", ".text", ".md"}
_TABLE_SUFFIXES = {".csv", ".tsv"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_FILE_SUFFIXES = _TEXT_SUFFIXES | _TABLE_SUFFIXES | _JSONL_SUFFIXES
_DEFAULT_KEYS = ("text", "sentence", "sentence1", "question", "content")

# The embedded corpora, both written for this project. `en`: English texts of every length (5 to
# 173 tokens), what quantization calibrates on. `sentences`: single short sentences (captions,
# news, questions, forum replies, reviews, facts), what a sentence encoder is usually fed;
# pruning re-fits on them, because a re-fit follows the token distribution it is fitted on: at
# --sparsity 0.5 on all-MiniLM-L6-v2 the STS-B dev drop was 0.67 with both corpora, 0.40 with
# the sentences alone.
CORPORA = ("en", "sentences")


def embedded_corpus_path(corpus: str = "en") -> Path:
    """calib/<corpus>.txt: inside the installed wheel (onnxopt/_calib) or beside the package in a
    checkout."""
    package = Path(__file__).resolve().parent.parent  # onnxopt/, in a wheel or a checkout
    for folder in (package / "_calib", package.parent / "calib"):
        if (folder / f"{corpus}.txt").is_file():
            return folder / f"{corpus}.txt"
    raise OnnxoptError(
        f"the embedded calibration corpus {corpus!r} is missing",
        "reinstall onnxopt, or pass --calib-data FILE",
    )


def embedded_samples(limit: int, clip: bool = False, corpus: str = "en") -> list[Sample]:
    """`limit` samples from an embedded corpus, in a fixed shuffled order so any N is varied.
    With `clip`, asking for more than the corpus holds returns all of it instead of failing."""
    texts = list(_read_lines(embedded_corpus_path(corpus)))
    random.Random(0).shuffle(texts)
    if limit > len(texts) and not clip:
        raise OnnxoptError(
            f"the embedded corpus has {len(texts)} samples, {limit} were asked for",
            f"use --calib {len(texts)} or fewer, or bring more with --calib-data FILE",
        )
    return texts[:limit]


def parse_columns(spec: str | None) -> list[str] | None:
    if spec is None or not spec.strip():
        return None
    cols = [c.strip() for c in spec.split(",") if c.strip()]
    if len(cols) > 2:
        raise OnnxoptError(
            f"--text-column takes one column or a pair, got {len(cols)}", "e.g. --text-column 5,6"
        )
    return cols


def load_samples(
    source: str, limit: int, text_column: str | None = None, split: str = "train"
) -> list[Sample]:
    """Read up to `limit` samples from a file, a local dataset folder, or a `datasets` hub name."""
    columns = parse_columns(text_column)
    path = Path(source)
    if path.is_dir():
        samples = list(itertools.islice(_read_dataset(str(path), columns, split, local=True), limit))
    elif path.exists() or path.is_symlink() or path.suffix.lower() in _FILE_SUFFIXES or "/" not in source:
        # Anything on disk (FIFOs and devices included, refused by regular_file), or what looks
        # like a file path or a bare word: a hub lookup would only hide the typo.
        regular_file(path, "calibration data", "check the path given to --calib-data")
        with contextlib.closing(_read_file(path, columns)) as reader:  # closed: its file too
            samples = list(itertools.islice(reader, limit))
    else:
        samples = list(itertools.islice(_read_dataset(source, columns, split, local=False), limit))
    if not samples:
        raise OnnxoptError(
            f"calibration data {shorten(source)} holds no samples",
            "give a file with one non-empty sample per line",
        )
    return samples


def _read_file(path: Path, columns: list[str] | None) -> Iterator[Sample]:
    suffix = path.suffix.lower()  # every reader goes through bounded_lines, which checks UTF-8
    if suffix in _TABLE_SUFFIXES:
        yield from _read_table(path, columns, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix in _JSONL_SUFFIXES:
        yield from _read_jsonl(path, columns)
    elif columns:
        raise OnnxoptError(
            f"--text-column does not apply to plain text {cut(str(path))}", "one sample per line is read"
        )
    else:
        yield from _read_lines(path)


def _read_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for line in bounded_lines(f, path, FIELD_LIMIT):
            line = line.strip()
            if line:
                yield line


def _read_table(path: Path, columns: list[str] | None, delimiter: str) -> Iterator[Sample]:
    # STS-style .tsv files carry stray quotes: quoting off for tabs, standard csv quoting for commas.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8", newline="") as f:
        reader = read_rows(f, path, delimiter=delimiter, quoting=quoting)
        if columns is None:
            raise OnnxoptError(
                f"{cut(str(path))} is a table: say which column holds the text",
                "pass --text-column NAME (or INDEX; two for sentence pairs, e.g. 5,6)",
            )
        if all(c.isdigit() for c in columns):
            indexes = [int(c) for c in columns]
        else:
            header = next(reader, [])
            missing = [c for c in columns if c not in header]
            if missing:
                raise OnnxoptError(
                    f"{cut(str(path))} has no column {shorten(missing[0])}",
                    f"its columns are: {', '.join(header[:12]) or '(none)'}",
                )
            indexes = [header.index(c) for c in columns]
        for row in reader:
            if len(row) <= max(indexes):
                continue
            yield from _as_sample([row[i] for i in indexes])


def _read_jsonl(path: Path, columns: list[str] | None) -> Iterator[Sample]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(bounded_lines(f, path, LINE_LIMIT), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OnnxoptError(
                    f"{cut(str(path))} line {number} is not JSON", "one JSON object or string per line"
                ) from exc
            if isinstance(record, str):
                values = [record]
            elif isinstance(record, dict):
                keys = _text_keys(list(record), columns, f"{cut(str(path))} line {number} has no field")
                values = [str(record[k]) for k in keys]
            else:
                raise OnnxoptError(
                    f"{cut(str(path))} line {number} is not a JSON object", "one JSON object per line"
                )
            if max(map(len, values)) > FIELD_LIMIT:
                raise over_limit(path, number, "a field", FIELD_LIMIT)
            yield from _as_sample(values)


def _read_dataset(name: str, columns: list[str] | None, split: str, local: bool) -> Iterator[Sample]:
    import datasets

    try:
        if local and any(
            (Path(name) / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")
        ):
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split, streaming=not local)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise OnnxoptError(
                    f"dataset {shorten(name)} has no split {shorten(split)}",
                    f"its splits are: {', '.join(ds)}",
                )
            ds = ds[split]
    except OnnxoptError:
        raise
    except Exception as exc:
        raise OnnxoptError(
            f"cannot load dataset {shorten(name)}: {first_line(exc, 160)}",
            "give a local file or dataset folder, or check the name and your network",
        ) from exc
    keys = _text_keys(list(ds.column_names or []), columns, f"dataset {shorten(name)} has no column")
    for record in ds:
        yield from _as_sample([str(record[k]) for k in keys])


def _text_keys(available: list[str], columns: list[str] | None, missing_message: str) -> list[str]:
    """The columns (or JSON fields) to read: those asked for, else the first usual text name."""
    keys = columns or [next((k for k in _DEFAULT_KEYS if k in available), "")]
    missing = [k for k in keys if k not in available]
    if missing:
        raise OnnxoptError(
            f"{missing_message} {shorten(missing[0])}",
            f"pass --text-column with one of: {', '.join(available[:12])}",
        )
    return keys


def _as_sample(values: list[str]) -> Iterator[Sample]:
    values = [v.strip() for v in values]
    if not all(values):
        return
    yield values[0] if len(values) == 1 else (values[0], values[1])
