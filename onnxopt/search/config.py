"""`onnxopt search`'s options, written once: the command line and the recipe step `search:` derive
from it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from onnxopt.errors import OnnxoptError, shorten
from onnxopt.options import Options, option

SEARCH_TASKS = ("sts", "classification", "qa", "perplexity")
EXECUTORS = ("local", "ray")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*\Z")
_UNIT = {None: 1, "s": 1, "m": 60, "h": 3600}


def seconds(text: str) -> float:
    """`90s`, `20m`, `1.5h` or a plain number of seconds."""
    match = _DURATION.match(str(text))
    value = float(match[1]) * _UNIT[match[2]] if match else 0.0
    if value <= 0:
        raise OnnxoptError(
            f"--time takes a duration such as 90s, 20m or 1h, got {shorten(text)}", "e.g. --time 20m"
        )
    return value


@dataclass(frozen=True)
class SearchConfig(Options):
    max_drop: float = option(
        help="Largest accuracy drop allowed against the input model, in the metric's points "
        "(perplexity: its increase).",
        low=0,
        metavar="X",
    )
    data: str = option(
        help="Evaluation data: STS pairs (sts), a labelled csv (classification), SQuAD json (qa), "
        "a text file (perplexity).",
        metavar="FILE",
    )
    task: str | None = option(
        None,
        "The metric (default: perplexity for causal LMs, classification or qa by the export's task, "
        "else sts).",
        choices=SEARCH_TASKS,
    )
    budget: int | None = option(None, "Run at most this many trials.", low=1)
    time: str | None = option(None, "Start no trial after this long: 90s, 20m, 1h.", metavar="T")
    space: str | None = option(
        None, "YAML file of the values to try, by the recipe options' names (default: built in).",
        metavar="FILE.yaml",
    )  # fmt: skip
    executor: str = option(
        "local", "local: one process; ray: builds and evaluations as Ray tasks.", choices=EXECUTORS
    )
    address: str | None = option(
        None, "Ray cluster: ray://HOST:10001 or auto (default: a local Ray for the run).", metavar="ADDR"
    )
    ray_cpus: int = option(2, "CPUs of the local Ray started without --address.", low=1)
    batch: tuple[int, ...] = option(
        (1, 32), "Batch sizes timed; the best model is the fastest at the largest.", low=1, metavar="1,32"
    )
    seq_len: int = option(128, "Tokens per sample, for evaluation and timing.", low=1)
    min_time: float = option(1.0, "Time each model for at least this many seconds per batch size.", low=0)
    runs: int = option(10, "Timed runs per model and batch size, at least.", low=1)

    def check(self) -> None:
        if self.budget is not None and self.time is not None:
            raise OnnxoptError("give --budget or --time, not both", "e.g. --time 20m")
        if self.time is not None:
            seconds(self.time)
        if self.address is not None and self.executor != "ray":
            raise OnnxoptError("--address names a Ray cluster", "add --executor ray, or drop --address")

    @property
    def time_limit(self) -> float | None:
        return seconds(self.time) if self.time is not None else None
