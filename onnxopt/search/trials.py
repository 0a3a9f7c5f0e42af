"""What a search keeps in OUT, so an interrupted one resumes where it stopped:

- `trials.jsonl`: one line per trial as it finishes (the reference first): key, settings, metric,
  drop, p50 latency and speedup per batch (against the reference timed in the same run), size.
- `evaluations.jsonl`: each model's metric as soon as it is measured (on Ray, latency comes later).
- `models/<hash>/`: each model built, once, named by the content hash of what it was made from
  (the kind of step, its options, its input's hash), as the recipe runner keys its steps: a pruned
  model is built once and quantized several ways, and a rerun rebuilds nothing.

Each file is rewritten whole through a temporary sibling and a rename (onnxopt.io.outputs), so a
killed search never leaves half a line; a finished trial is found again by its hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onnxopt import __version__ as onnxopt_version
from onnxopt.io.hashing import file_hash
from onnxopt.io.outputs import write_text_atomic

TRIALS = "trials.jsonl"
EVALUATIONS = "evaluations.jsonl"
MODELS = "models"
REFERENCE = "reference"
_PATH_OPTIONS = ("calib_data", "eval_data")


@dataclass
class Trial:
    key: str
    status: str  # reference, done, failed or skipped
    settings: dict[str, Any]
    hash: str = ""
    metric: str | None = None
    value: float | None = None
    drop: float | None = None
    higher_is_better: bool = True
    within_budget: bool | None = None
    p50_ms: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    reference_p50_ms: dict[int, float] = field(default_factory=dict)  # in the same timing run
    size_bytes: int | None = None
    model: str | None = None  # its folder, relative to OUT
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> Trial:
        data = dict(data)
        for name in ("p50_ms", "speedup", "reference_p50_ms"):
            data[name] = {int(k): float(v) for k, v in (data.get(name) or {}).items()}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def digest(value: Any) -> str:
    blob = json.dumps({"value": value, "onnxopt": onnxopt_version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def node_hash(kind: str, options: dict, parent: str) -> str:
    """A built model's name: the step, its options (a data file by its content) and its input."""
    keyed = dict(options)
    for name in _PATH_OPTIONS:
        value = keyed.get(name)
        if isinstance(value, str) and Path(value).is_file():
            keyed[name] = {"path": value, "sha256": file_hash([Path(value)])}
    return digest({"kind": kind, "options": keyed, "input": parent})


def _read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a damaged line only costs that trial again
        if isinstance(record, dict) and isinstance(record.get("hash"), str):
            found.append(record)
    return found


class Store:
    """OUT's trials and evaluations: read once, each new record written at once."""

    def __init__(self, out: Path):
        self.out = out
        self.trial_lines = _read_lines(out / TRIALS)
        self.eval_lines = _read_lines(out / EVALUATIONS)
        self.trials = {r["hash"]: r for r in self.trial_lines if r.get("status") != "skipped"}
        self.evaluations = {r["hash"]: r for r in self.eval_lines}

    def finished(self, trial_hash: str) -> Trial | None:
        record = self.trials.get(trial_hash)
        return Trial.from_dict(record) if record is not None else None

    def add_trial(self, trial: Trial) -> None:
        record = json.loads(json.dumps(asdict(trial), default=str))
        if trial.status == "skipped" and any(
            r.get("hash") == trial.hash and r.get("status") == "skipped" for r in self.trial_lines
        ):
            return  # already said, in an earlier run
        self.trial_lines.append(record)
        if trial.status != "skipped":
            self.trials[trial.hash] = record
        _write_lines(self.out / TRIALS, self.trial_lines)

    def add_evaluation(self, record: dict) -> None:
        self.eval_lines.append(record)
        self.evaluations[record["hash"]] = record
        _write_lines(self.out / EVALUATIONS, self.eval_lines)

    def model_folder(self, node: str) -> Path:
        return self.out / MODELS / node[:16]


def _write_lines(path: Path, records: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def front(points: list[tuple[str, float, float]], higher_is_better: bool) -> list[str]:
    """Keys of the (key, cost, metric) points no other point beats on both: lower cost (latency or
    size) and a better metric; cheapest first."""
    sign = 1 if higher_is_better else -1
    kept = []
    for key, cost, value in points:
        beaten = any(
            c2 <= cost and sign * v2 >= sign * value and (c2 < cost or sign * v2 > sign * value)
            for k2, c2, v2 in points
            if k2 != key
        )
        if not beaten:
            kept.append((cost, key))
    return [key for _, key in sorted(kept)]
