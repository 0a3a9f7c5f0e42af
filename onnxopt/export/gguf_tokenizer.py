"""A GGUF file's byte-level BPE tokenizer (tokenizer.ggml.model "gpt2": GPT-2, SmolLM2, Qwen2...)
saved as the byte-level tokenizer it is. transformers' GGUF import (4.57) writes it with the BPE
model's `byte_fallback` on, a SentencePiece decoder (ByteFallback, Fuse, Replace '▁') in front of
ByteLevel, and tokenizer_class LlamaTokenizer. transformers itself still encodes it right, but
onnxruntime-genai 0.18.0's tokenizer, reading those files, gave -1 ids for SmolLM2's text and
decoded 'Ġ' as 'Ġ', not a space. Rewritten with the BPE model's byte_fallback off, a plain
ByteLevel decoder and GPT2TokenizerFast, genai's ids equal transformers'
(tests/export/test_gguf_tokenizer.py).
Vocabulary, merges, added tokens and the pre-tokenizer are kept, so transformers' ids are the
ones it gave before the rewrite, but for one: the import adds the bos token (<|im_start|> for
SmolLM2) in front of every text, though the GGUF says tokenizer.ggml.add_bos_token = false (and
neither the original Hugging Face folder nor llama.cpp adds it; a chat prompt began
<|im_start|><|im_start|>system), and genai never adds it, so the two could not agree. Where the
GGUF says false, the post-processor is GPT-2's ByteLevel, which adds nothing.

The import also names <|im_start|> (SmolLM2's bos, id 1) as eos, where the GGUF's own
tokenizer.ggml.eos_token_id is 2 (<|im_end|>, the instruct model's end of turn, as the original
Hugging Face folder has it); the GGUF's eos and pad ids are written back where the file gives them.
"""

from __future__ import annotations

import json
from pathlib import Path

from onnxopt.errors import OnnxoptError
from onnxopt.io.files import read_json
from onnxopt.io.gguf_header import read_header

BYTE_LEVEL_MODEL = "gpt2"  # tokenizer.ggml.model of byte-level BPE vocabularies (llama.cpp's name)
# GPT-2's own tokenizer.json decoder; add_prefix_space and trim_offsets do not change decoded text.
_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
# GPT-2's and SmolLM2's own post-processor: nothing added around the text.
_POST_PROCESSOR = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
_TOKENIZER_CLASS = "GPT2TokenizerFast"


def fix_gguf_tokenizer(gguf: Path, folder: Path) -> bool:
    """Rewrite `folder`'s tokenizer.json and tokenizer_config.json (saved by transformers from
    `gguf`) as byte-level when the GGUF's tokenizer is; True if they were rewritten."""
    metadata = read_header(gguf).metadata
    if metadata.get("tokenizer.ggml.model") != BYTE_LEVEL_MODEL:
        return False
    tokenizer_path, config_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
    tokenizer, config = _read(tokenizer_path), _read(config_path)
    tokenizer["model"]["byte_fallback"] = False  # no <0x..> tokens: the bytes are 'Ġ'-style symbols
    tokenizer["decoder"] = dict(_DECODER)
    config["tokenizer_class"] = _TOKENIZER_CLASS
    config.pop("legacy", None)  # a LlamaTokenizer option
    if metadata.get("tokenizer.ggml.add_bos_token") is False and not config.get("add_eos_token"):
        tokenizer["post_processor"] = dict(_POST_PROCESSOR)
        config["add_bos_token"] = False
    ids = {token["id"]: token["content"] for token in tokenizer.get("added_tokens", [])}
    vocab = {index: token for token, index in tokenizer["model"]["vocab"].items()}
    for role, key in (("eos", "eos_token_id"), ("pad", "padding_token_id")):
        index = metadata.get(f"tokenizer.ggml.{key}")
        token = ids.get(index, vocab.get(index)) if isinstance(index, int) else None
        if token is not None:
            config[f"{role}_token"], config[f"{role}_token_id"] = token, index
    _write(tokenizer_path, tokenizer)
    _write(config_path, config)
    _fix_special_tokens_map(folder / "special_tokens_map.json", config)
    return True


def _fix_special_tokens_map(path: Path, config: dict) -> None:
    """special_tokens_map.json, where transformers wrote one, names the same eos and pad."""
    if not path.is_file():
        return
    tokens = _read(path)
    for role in ("eos_token", "pad_token"):
        if role in config:
            tokens[role] = config[role]
    _write(path, tokens)


def _read(path: Path) -> dict:
    data = read_json(path.parent, path.name)  # regular file in its folder, bounded, a JSON object
    if data is None:
        raise OnnxoptError(f"transformers saved no {path.name} from the GGUF file", "export again")
    return data


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
