"""STS pairs (the STS Benchmark layout): gold score, two sentences, and the genre."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from onnxopt.data.textio import read_rows
from onnxopt.errors import OnnxoptError, cut
from onnxopt.io.files import regular_file


@dataclass
class StsPair:
    score: float
    first: str
    second: str
    genre: str = ""  # the source column of the STS Benchmark layout (MSRpar, headlines, ...)


def load_sts_pairs(path: Path) -> list[StsPair]:
    """STS Benchmark layout: tab separated, no header, quoting off; the source (genre) in column 2,
    score and sentences in columns 5-7."""
    hint = "point at an STS-style .csv such as sts-dev.csv"
    pairs = []
    with regular_file(path, "STS data", hint).open(encoding="utf-8", newline="") as f:
        for row in read_rows(f, path, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 7:
                continue
            try:
                pairs.append(StsPair(float(row[4]), row[5], row[6], row[1]))
            except ValueError:
                continue
    if not pairs:
        raise OnnxoptError(
            f"{cut(str(path))} holds no STS pairs",
            "expected tab-separated rows with score, sentence 1, sentence 2",
        )
    return pairs
