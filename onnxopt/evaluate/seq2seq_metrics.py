"""`eval` of an encoder-decoder in parts (onnxopt.io.parts):

- generation: each prompt continued greedily through the three parts (onnxopt.runtime.seq2seq),
  compared token for token with the reference's continuation (onnxopt.evaluate.generation's
  greedy_agreement);
- fidelity: the feeds each part gets while the reference generates (the encoder on the text, the
  first step, FIDELITY_STEPS steps through the cache), run through both models' parts; the
  cosine of each part's first output (the encoder's states, the decoders' logits) per feed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxopt.data.samples import clip_text, load_tokenizer
from onnxopt.errors import OnnxoptError, cut
from onnxopt.evaluate.fidelity import Fidelity
from onnxopt.io.model_info import ModelInfo
from onnxopt.runtime.seq2seq import Seq2Seq
from onnxopt.runtime.similarity import cosine

FIDELITY_STEPS = 8
PARTS_TASKS = ("generation", "fidelity")


def check_parts_eval(model: Path, reference: Path | ModelInfo | None, task: str) -> None:
    """What eval of a folder in parts takes: generation or fidelity, against a folder in parts."""
    if task not in PARTS_TASKS:
        raise OnnxoptError(
            f"eval --task {task} does not work on an encoder-decoder in parts ({cut(str(model))}) yet",
            f"use --task {' or '.join(PARTS_TASKS)}",
        )
    other = ModelInfo.read(reference) if reference is not None else None
    if other is not None and not other.in_parts:
        raise OnnxoptError(
            f"{cut(str(model))} is an encoder-decoder in parts; its reference {cut(str(other.path))} is not",
            "compare it with the folder it was made from (e.g. the fp32 export)",
        )


def _ids(tokenizer, text: str, seq_len: int) -> np.ndarray:
    return tokenizer(clip_text(text, seq_len), truncation=True, max_length=seq_len, return_tensors="np")[
        "input_ids"
    ]


def greedy_tokens(model: Path, prompts: list[str], new_tokens: int, seq_len: int, settings=None) -> list:
    runner, tokenizer = Seq2Seq.load(model, settings), load_tokenizer(model)
    return [runner.greedy(_ids(tokenizer, prompt, seq_len), new_tokens)[0] for prompt in prompts]


def parts_fidelity(model: Path, reference: Path, texts: list[str], seq_len: int, settings=(None, None)):
    """Each part's first output against the reference's on the feeds of the reference's generation."""
    ours, theirs = Seq2Seq.load(model, settings[0]), Seq2Seq.load(reference, settings[1])
    tokenizer = load_tokenizer(reference)
    cosines, worst = [], 0.0
    for text in texts:
        for part, feed, want in theirs.feeds(_ids(tokenizer, text, seq_len), FIDELITY_STEPS):
            name = theirs.outputs[part][0]
            got = ours.run(part, feed)[name].astype(np.float64).ravel()
            expected = want[name].astype(np.float64).ravel()
            if got.shape != expected.shape:
                raise OnnxoptError(
                    f"{cut(str(model))}'s {part} gives {got.size} values of {name}, "
                    f"the reference's {expected.size}",
                    "compare a model with the one it was made from",
                )
            cosines.append(cosine(got, expected))
            worst = max(worst, float(np.max(np.abs(got - expected))))
    if not cosines:
        raise OnnxoptError("no samples to compare", "give --limit above 0, or a non-empty --data file")
    return Fidelity(len(cosines), float(np.mean(cosines)), float(np.min(cosines)), worst)
