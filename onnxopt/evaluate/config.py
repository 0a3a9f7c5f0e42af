"""`onnxopt eval`'s options, written once: the command line and the recipe schema derive from it."""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.choices import EVAL_TASKS, PROVIDERS
from onnxopt.errors import OnnxoptError
from onnxopt.options import Options, option

# task -> (what its --data must be, hint)
NEEDS = {
    "sts": ("pairs with gold scores", "pass --data path/to/sts-dev.csv"),
    "classification": ("a labelled csv", "pass --data FILE with text and label columns"),
    "qa": ("a SQuAD-format json", "pass --data FILE"),
    "perplexity": ("a text file", "pass --data FILE"),
}
SEQ_LEN = {"qa": 384}
# Samples read without --limit. Perplexity has no such default: it streams the text in bounded
# windows, so the whole text is scored, as before --limit applied to it (and a resumed search's
# reference, scored on the whole text, still compares with its new trials).
SAMPLES = 64  # the default --seq-len is 128 but for these tasks


@dataclass(frozen=True)
class EvalConfig(Options):
    reference: str | None = option(
        None,
        "Reference model folder, e.g. the fp32 export (in recipes: an earlier step's name).",
        metavar="DIR",
    )
    task: str = option(
        "fidelity",
        "What to measure (fidelity: outputs vs --reference; generation: greedy agreement with it).",
        choices=EVAL_TASKS,
    )
    data: str | None = option(
        None,
        "fidelity: text/csv/jsonl samples; sts: an STS .csv; classification: csv with a header; "
        "qa: SQuAD .json; perplexity: a text file.",
        metavar="PATH",
    )
    limit: int | None = option(
        None,
        "Samples to compare for fidelity (default 64); prompts for generation (default 64); for "
        "perplexity, windows of --seq-len tokens scored from the start (default: the whole text).",
        low=1,
    )
    new_tokens: int = option(32, "generation: tokens generated greedily after each prompt.", low=1)
    seq_len: int | None = option(None, "Truncate inputs to this many tokens (default 128; qa 384).", low=1)
    text_column: str | None = option(None, "Column(s) holding the text, for csv/jsonl data.")
    label_column: str = option("label", "Column holding the label, for classification.")
    ep: str | None = option(
        None,
        "Execution provider to run on (default: the one `bench --ep auto` saved, else cpu).",
        choices=PROVIDERS,
    )

    def check(self) -> None:
        if self.task == "generation" and self.reference is None:
            raise OnnxoptError(
                "the generation task compares greedy generation with a reference model",
                "pass --reference DIR (e.g. the fp32 export)",
            )
        if self.task not in ("fidelity", "generation") and self.data is None:
            what, hint = NEEDS[self.task]
            raise OnnxoptError(f"the {self.task} task needs {what}", hint)

    @property
    def tokens(self) -> int:
        return self.seq_len or SEQ_LEN.get(self.task, 128)

    @property
    def samples(self) -> int:
        """Samples or prompts to read for the sample-based tasks."""
        return self.limit or SAMPLES
