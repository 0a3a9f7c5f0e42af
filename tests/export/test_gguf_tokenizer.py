"""A GGUF's byte-level BPE tokenizer (tokenizer.ggml.model "gpt2") exported as one
(onnxopt/export/gguf_tokenizer.py): a tiny Llama GGUF built in code with a GPT-2-style vocabulary
(the 256 byte symbols, a few merges, ChatML's special tokens), read by onnxopt's GGUF path and
exported. transformers' import alone saved it with byte_fallback and a SentencePiece decoder, which
onnxruntime-genai's tokenizer encoded as -1 ids; now genai's ids equal transformers', transformers'
equal those of the import as it was (less the bos the GGUF says not to add), and both decode back."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from onnxopt.export.gguf_tokenizer import fix_gguf_tokenizer
from onnxopt.export.sources import read_gguf
from onnxopt.io.gguf_header import read_header
from tests.conftest import export_to

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ w", "o r", "l l"]
TEXTS = [
    "Hello world",
    "  two leading spaces and the other",
    "Hello, world! (ok?) [x] {y}; a-b_c",
    "2024-12-07 3.14159 1000000",
    "café naïve Ærøskøbing",
    "emoji 🙂👍🏽 done",
    "中文字符 日本語 한국어",
    "line one\nline two\n\n\tindented",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "tabs\tand   many    spaces  ",
    "Ġ literal, it's we'll",
    "",
]


def _byte_symbols() -> list[str]:
    """GPT-2's bytes_to_unicode: each byte's one-character symbol (a space is 'Ġ')."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _tokens() -> list[str]:
    return [*SPECIALS, *_byte_symbols(), *("".join(m.split()) for m in MERGES)]


def write_byte_level_gguf(path: Path, hidden: int = 64, layers: int = 2) -> None:
    """A random Llama (4 query heads of 16, 2 K/V heads) whose tokenizer is byte-level BPE."""
    import gguf

    tokens, rng = _tokens(), np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(2 * hidden)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))  # 3: control
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)

    def weight(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    weight("token_embd.weight", len(tokens), hidden)
    weight("output.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        for name, shape in (("attn_q", (hidden, hidden)), ("attn_k", (hidden // 2, hidden))):
            weight(f"blk.{i}.{name}.weight", *shape)
        weight(f"blk.{i}.attn_v.weight", hidden // 2, hidden)
        weight(f"blk.{i}.attn_output.weight", hidden, hidden)
        weight(f"blk.{i}.ffn_gate.weight", 2 * hidden, hidden)
        weight(f"blk.{i}.ffn_up.weight", 2 * hidden, hidden)
        weight(f"blk.{i}.ffn_down.weight", hidden, 2 * hidden)
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny GGUF, and its ONNX export through read_gguf (the tokenizer files travel with it)."""
    root = tmp_path_factory.mktemp("gguf")
    write_byte_level_gguf(root / "tiny.gguf")
    read_gguf(root / "tiny.gguf", root / "hf")
    return root / "tiny.gguf", export_to(root / "hf", root / "onnx")


def _imported(gguf_path: Path):
    """transformers' own import of the GGUF's tokenizer, as onnxopt saved it before the rewrite."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def test_the_import_alone_is_what_genai_could_not_read(exported):
    gguf_path, _ = exported
    saved = json.loads(_imported(gguf_path).backend_tokenizer.to_str())
    # If transformers ever writes a byte-level tokenizer itself, the rewrite is no longer needed.
    assert saved["model"]["byte_fallback"] is True
    assert [d["type"] for d in saved["decoder"]["decoders"]][:2] == ["ByteFallback", "Fuse"]


def test_transformers_ids_are_the_imports_less_the_bos(exported):
    from transformers import AutoTokenizer

    gguf_path, folder = exported
    before, after = _imported(gguf_path), AutoTokenizer.from_pretrained(folder)
    assert type(after).__name__ == "GPT2TokenizerFast"
    for text in TEXTS:
        old, new = before(text)["input_ids"], after(text)["input_ids"]
        assert old == [1, *new], text  # the import added <|im_start|>; the GGUF says add_bos false
        assert after.decode(new) == text
    assert len(after("the other")["input_ids"]) < len("the other")  # the merges are used
    assert (after.eos_token, after.eos_token_id, after.pad_token_id) == ("<|im_end|>", 2, 2)


def test_genai_encodes_and_decodes_as_transformers(exported):
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (extra genai)")
    from transformers import AutoTokenizer

    _, folder = exported
    reference, tokenizer = AutoTokenizer.from_pretrained(folder), og.Tokenizer(og.Model(str(folder)))
    for text in TEXTS:
        ids = reference(text)["input_ids"]
        assert list(tokenizer.encode(text)) == ids, text
        assert tokenizer.decode(np.array(ids, np.int32)) == reference.decode(ids, skip_special_tokens=True)
    assert json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"] == 2


def test_other_tokenizer_models_are_left_as_imported(exported, tmp_path):
    gguf_path, folder = exported
    other = tmp_path / "spm.gguf"
    length = struct.pack("<Q", 4)  # GGUF strings: a u64 length, then the bytes
    data = gguf_path.read_bytes().replace(length + b"gpt2", length + b"spm1", 1)  # not "gpt2"
    assert data != gguf_path.read_bytes()
    other.write_bytes(data)
    assert read_header(other).metadata["tokenizer.ggml.model"] == "spm1"
    before = (folder / "tokenizer.json").read_bytes()
    (tmp_path / "tokenizer.json").write_bytes(before)
    assert fix_gguf_tokenizer(other, tmp_path) is False
    assert (tmp_path / "tokenizer.json").read_bytes() == before
