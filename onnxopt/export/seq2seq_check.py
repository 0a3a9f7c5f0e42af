"""An encoder-decoder exported in parts, against PyTorch: the first decoder step's logits on a
sample batch (relative to their scale), and greedy generation through the three parts against
`generate()`, token for token, on the prompts decoders are checked on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxopt.export.torch_check import GREEDY_TOKENS, PROMPTS, TorchCheck
from onnxopt.runtime.seq2seq import Seq2Seq
from onnxopt.silence import quiet

_CHECK_TEXTS = ["onnxopt checks the encoder-decoder against PyTorch.", "A second text."]


def compare_seq2seq(source: str, folder: Path, task: str, trust_remote_code: bool) -> TorchCheck:
    import torch
    from optimum.exporters.tasks import TasksManager

    from onnxopt.data.samples import load_tokenizer

    tokenizer = load_tokenizer(folder)
    runner = Seq2Seq.load(folder)
    with quiet():
        torch_model = TasksManager.get_model_from_task(
            task, source, library_name="transformers", trust_remote_code=trust_remote_code
        )
    torch_model.eval()
    check = TorchCheck({})
    for text in _CHECK_TEXTS:  # one text at a time: the runner feeds no padding
        ids = tokenizer(text, return_tensors="np")["input_ids"]
        ours = next(values for part, _f, values in runner.feeds(ids, 1) if part == "decoder")["logits"]
        start = torch.full((1, 1), runner.start_token, dtype=torch.long)
        with torch.no_grad():
            theirs = torch_model(input_ids=torch.from_numpy(ids.astype(np.int64)), decoder_input_ids=start)
        expected = theirs.logits.numpy()
        diff = float(np.max(np.abs(expected - ours)))
        check.diffs["logits"] = max(check.diffs.get("logits", 0.0), diff)
        relative = diff / max(float(np.max(np.abs(expected))), 1e-30)
        check.relative["logits"] = max(check.relative.get("logits", 0.0), relative)
    check.agreement, note = _greedy_agreement(runner, tokenizer, torch_model)
    check.notes.append(note)
    return check


def _greedy_agreement(runner: Seq2Seq, tokenizer, torch_model) -> tuple[float, str]:
    import torch
    from transformers import GenerationConfig

    # Plain greedy decoding, as the runner does: no forced tokens, n-gram bans or early stop
    # that a checkpoint's generation_config.json may ask for (BART's summarizers do).
    plain = GenerationConfig(
        max_new_tokens=GREEDY_TOKENS,
        min_new_tokens=GREEDY_TOKENS,  # never the end token, as the runner (Seq2Seq.next_token)
        do_sample=False,
        num_beams=1,
        decoder_start_token_id=runner.start_token,
        pad_token_id=tokenizer.pad_token_id,
    )
    equal = total = 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="np")["input_ids"]
        ours = runner.greedy(ids, GREEDY_TOKENS)[0]
        with torch.no_grad(), quiet():
            theirs = torch_model.generate(
                torch.from_numpy(ids.astype(np.int64)),
                attention_mask=torch.ones(ids.shape, dtype=torch.long),
                generation_config=plain,
            )[0, 1:].numpy()  # after the start token
        length = min(len(ours), len(theirs))
        equal += int((ours[:length] == theirs[:length]).sum())
        total += len(ours)
    note = f"greedy generation through the 3 parts: {equal}/{total} tokens equal PyTorch's"
    return equal / max(total, 1), f"{note} ({len(PROMPTS)} prompts x {GREEDY_TOKENS})"
