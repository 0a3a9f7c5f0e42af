"""The exported graph against PyTorch: onnxruntime and the original model on one padded batch, and
for a decoder exported with its cache, greedy generation through that cache against
`generate()`, token for token.

A decoder's logits are compared relative to their scale: SmolLM2's differ by 4.8e-4 in plain fp32
after 30 layers over a 49,152-word vocabulary, with logits near 30 (1.6e-5 relative), and one
absolute tolerance cannot serve both that and a sentence encoder's hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxopt.errors import OnnxoptError
from onnxopt.io import model_files
from onnxopt.silence import quiet

_CHECK_TEXTS = [
    "onnxopt checks the exported graph against PyTorch.",
    "A second, longer sentence pads the first.",
]
# Greedy generation is compared on these prompts (written for this check; a decoder's are cut to
# the shortest, same_length), GREEDY_TOKENS each.
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "The best way to learn a new language is",
    "Water boils at a temperature of",
    "In the morning, the train to the city",
    "A good cup of coffee needs",
    "The three primary colours are",
    "My favourite book is about",
]
GREEDY_TOKENS = 32
MIN_AGREEMENT = 0.9  # below this share of equal tokens the export is broken, not merely rounded
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


@dataclass
class TorchCheck:
    diffs: dict[str, float]  # max abs difference per output
    relative: dict[str, float] = field(default_factory=dict)  # the same over the output's largest magnitude
    agreement: float | None = None  # greedy tokens equal to PyTorch's, for decoders with a cache
    notes: list[str] = field(default_factory=list)


def compare_with_torch(
    source: str, folder: Path, task: str, types: dict[str, type], trust_remote_code: bool, dtype="fp32"
) -> TorchCheck:
    """onnxruntime against PyTorch on a padded sample batch (the real tokens only), and greedy
    generation for decoders exported with their cache. PyTorch runs first and is freed before
    onnxruntime loads the graph: one copy of the weights at a time (a 1B model's are 4 GB)."""
    import onnxruntime as ort

    from onnxopt.data.samples import complete_inputs, load_tokenizer

    tokenizer = load_tokenizer(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = dict(tokenizer(_CHECK_TEXTS, padding=True, return_tensors="np"))
    feed = complete_inputs(enc, types)
    prompts = same_length([tokenizer(prompt, return_tensors="np")["input_ids"] for prompt in PROMPTS])
    generative = types.cache is not None
    torch_out, theirs = _torch_reference(
        source, task, feed, prompts if generative else [], tokenizer, trust_remote_code, dtype
    )
    session = ort.InferenceSession(str(folder / model_files.MODEL_FILE), providers=["CPUExecutionProvider"])
    onnx_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    mask = enc["attention_mask"].astype(bool)
    check = _compare_outputs(onnx_outputs, torch_out, mask, generative=generative)
    if generative:
        check.agreement, note = _greedy_agreement(session, types, prompts, theirs)
        check.notes.append(note)
    return check


def same_length(prompts: list[np.ndarray]) -> np.ndarray:
    """The tokenized prompts cut to the shortest, as one batch (len(PROMPTS), tokens): PyTorch and
    onnxruntime then each generate once for all of them, with no padding to tell apart. One prompt
    at a time, PyTorch's 8 generate() calls took 99 of the 164 s of a Qwen2.5-0.5B-shaped check."""
    shortest = min(ids.shape[1] for ids in prompts)
    return np.concatenate([ids[:, :shortest] for ids in prompts], 0)


def until_end(tokens: np.ndarray, ends) -> np.ndarray:
    """A generated row up to its first end-of-sequence token, that included: generate() pads the
    rows of a batch that ended before the others."""
    ends = [ends] if isinstance(ends, int) else list(ends or [])
    stops = np.flatnonzero(np.isin(tokens, ends))
    return tokens[: stops[0] + 1] if stops.size else tokens


def _torch_reference(source, task, feed, prompts, tokenizer, trust_remote_code, dtype="fp32"):
    """PyTorch's outputs on the sample batch (as arrays, fp32) and its greedy tokens for each
    prompt, from the model loaded in the exported `dtype`."""
    import gc

    import torch
    from optimum.exporters.tasks import TasksManager

    with quiet():
        torch_model = TasksManager.get_model_from_task(
            task,
            source,
            library_name="transformers",
            trust_remote_code=trust_remote_code,
            torch_dtype=torch.float16 if dtype == "fp16" else torch.float32,
        )
    torch_model.eval()
    torch_feed = {k: torch.from_numpy(v.astype(np.int64)) for k, v in feed.items() if k in _TOKEN_INPUTS}
    with torch.no_grad():
        out = torch_model(**torch_feed)
    arrays = {k: v.float().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
    del out
    tokens = []
    if len(prompts):
        with torch.no_grad(), quiet():
            generated = torch_model.generate(
                torch.from_numpy(prompts.astype(np.int64)),
                attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                max_new_tokens=GREEDY_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )[:, prompts.shape[1] :].numpy()
        ends = torch_model.generation_config.eos_token_id
        tokens = [until_end(row, ends) for row in generated]
    del torch_model
    gc.collect()
    return arrays, tokens


def _compare_outputs(onnx_outputs: dict, torch_out, mask: np.ndarray, generative: bool) -> TorchCheck:
    check = TorchCheck({})
    for name, value in onnx_outputs.items():
        if name.startswith("present.") or name not in torch_out or torch_out[name] is None:
            continue
        expected = torch_out[name]
        if expected.shape != value.shape:
            check.diffs[name] = float("inf")
            continue
        if expected.ndim >= 2 and expected.shape[:2] == mask.shape:  # padding positions mean nothing
            expected, value = expected[mask], value[mask]
        check.diffs[name] = float(np.max(np.abs(expected - value))) if value.size else 0.0
        if generative:
            check.relative[name] = check.diffs[name] / max(float(np.max(np.abs(expected))), 1e-30)
    if not check.diffs:
        raise OnnxoptError(
            "no exported output matches a PyTorch output by name",
            "the export may be for another task; pass --task explicitly",
        )
    return check


def _greedy_agreement(session, types, prompts, theirs) -> tuple[float, str]:
    """The share of greedy tokens (PROMPTS x GREEDY_TOKENS) equal to PyTorch's `generate()`."""
    from onnxopt.runtime.generation import Decoder

    decoder = Decoder(session, types.cache, types.get("input_ids", np.int64))
    equal = total = 0
    for ours, their_tokens in zip(decoder.greedy(prompts, GREEDY_TOKENS), theirs, strict=True):
        # Compared up to PyTorch's end of sequence, its eos included. min_new_tokens once kept it
        # going, but by banning eos in PyTorch only: SmolLM2's export without a BOS token read
        # 254/256, both sides' logits choosing <|im_end|> at step 29 (6.5e-5 apart).
        ours = ours[: len(their_tokens)]
        equal += int((ours == their_tokens).sum())
        total += len(their_tokens)
    share = equal / max(total, 1)
    note = f"greedy generation: {equal}/{total} tokens equal PyTorch's"
    return share, f"{note} ({len(PROMPTS)} prompts x {GREEDY_TOKENS})"
