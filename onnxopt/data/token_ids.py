"""Token ids of text, read straight from the folder's tokenizer.json where that file says it all.

Scoring text (eval --task perplexity) needs only ids. transformers' AutoTokenizer costs its import,
torch's with it: 450 MB of resident memory and about 3 s (off-grid SmolLM2 int4, eval perplexity:
peak RSS 972 -> 592 MB in the CLI). The `tokenizers` library reads tokenizer.json, the same file
transformers' fast tokenizers wrap, in 41-57 MB. transformers applies a few tokenizer_config.json
settings on top of that file (whether to add BOS/EOS, a prefix space, lower-casing); where the
config sets one that could change the ids, AutoTokenizer is used instead. tests/data/
test_token_ids.py compares the two on every tokenizer the tests build and bundle: the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxopt.data.samples import load_tokenizer
from onnxopt.io.files import JSON_LIMIT, file_in_folder, read_json

TOKENIZER_FILE = "tokenizer.json"
# tokenizer_config.json keys with which transformers rebuilds part of tokenizer.json's pipeline.
_REBUILT_BY = ("add_bos_token", "add_eos_token", "do_lower_case", "add_prefix_space")


class TokenizerFile:
    """`tokenizer(text, add_special_tokens=...)["input_ids"]`, as a transformers tokenizer answers it."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(
        self, text: str, add_special_tokens: bool = True, verbose: bool = False
    ) -> dict[str, list[int]]:
        return {"input_ids": self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}


def _used_as_is(config: dict, pipeline: dict) -> bool:
    """Whether transformers uses tokenizer.json as it is, whatever tokenizer_config.json says."""
    for key in _REBUILT_BY:
        value = config.get(key)
        if value is None:
            continue
        if key in ("add_bos_token", "add_eos_token") and value is False and not _adds_specials(pipeline):
            continue
        if key == "add_prefix_space" and _prefix_space(pipeline) == value:
            continue
        return False
    return True


def _adds_specials(pipeline: dict) -> bool:
    """Whether tokenizer.json's post-processor puts special tokens around the text."""
    post = json.dumps(pipeline.get("post_processor") or {})
    return any(mark in post for mark in ("SpecialToken", "BertProcessing", "RobertaProcessing"))


def _prefix_space(pipeline: dict) -> bool | None:
    """The add_prefix_space of tokenizer.json's pre-tokenizer(s), None when they disagree or lack it."""
    found = set()
    stack = [pipeline.get("pre_tokenizer") or {}]
    while stack:
        part = stack.pop()
        stack.extend(part.get("pretokenizers") or [])
        if "add_prefix_space" in part:
            found.add(part["add_prefix_space"])
    return found.pop() if len(found) == 1 else None


def _state(part: Any) -> dict:
    """A tokenizers pipeline part as its tokenizer.json entry ({} when the file has none)."""
    return json.loads(part.__getstate__()) if part is not None else {}


def load_token_ids(folder: Path | None):
    """A callable giving token ids of text: tokenizer.json through `tokenizers` when transformers
    would use that file unchanged, transformers' AutoTokenizer otherwise. The settings are read
    off the loaded tokenizer, not a second parse of the file in Python (+23 MB at peak for
    SmolLM2's 3.5 MB file)."""
    if folder is None or not (folder / TOKENIZER_FILE).is_file():
        return load_tokenizer(folder)
    from tokenizers import Tokenizer

    path = file_in_folder(folder, folder / TOKENIZER_FILE, "tokenizer", JSON_LIMIT)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception:  # noqa: BLE001 - transformers says what is wrong with the file, with a hint
        return load_tokenizer(folder)
    pipeline = {
        "pre_tokenizer": _state(tokenizer.pre_tokenizer),
        "post_processor": _state(tokenizer.post_processor),
    }
    if _used_as_is(read_json(folder, "tokenizer_config.json") or {}, pipeline):
        return TokenizerFile(tokenizer)
    return load_tokenizer(folder)
