"""Token ids without transformers (onnxopt/data/token_ids.py): tokenizer.json read by `tokenizers`
gives transformers' own ids on every tokenizer the tests build and the bundled SmolLM2's as the
export writes it; where tokenizer_config.json asks transformers to change that file's pipeline,
AutoTokenizer answers; and perplexity no longer imports transformers (nor torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onnxopt.data.token_ids import TokenizerFile, load_token_ids
from tests.conftest import build_tiny_bert, build_tiny_gpt2, export_to
from tests.export.test_gguf_tokenizer import TEXTS


@pytest.fixture(scope="module")
def smollm2_tokenizer(tmp_path_factory) -> Path:
    """The bundled SmolLM2's tokenizer files, written as `onnxopt export` writes them."""
    from transformers import AutoTokenizer

    from onnxopt.export.gguf_tokenizer import fix_gguf_tokenizer
    from onnxopt.export.sources import bundled_source

    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    gguf = bundled_source("smollm2").gguf
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(folder)
    fix_gguf_tokenizer(gguf, folder)
    return folder


def _same_ids(folder: Path) -> object:
    from transformers import AutoTokenizer

    reference, fast = AutoTokenizer.from_pretrained(str(folder)), load_token_ids(folder)
    for text in TEXTS + ["A man is playing a guitar.", " leading space", "word " * 300]:
        for special in (True, False):
            want = reference(text, add_special_tokens=special)["input_ids"]
            assert fast(text, add_special_tokens=special, verbose=False)["input_ids"] == want, (text, special)
    return fast


def _set(folder: Path, **settings) -> None:
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))


@pytest.mark.slow
def test_the_bundled_smollm2_tokenizer_gives_transformers_ids_without_it(smollm2_tokenizer):
    assert isinstance(_same_ids(smollm2_tokenizer), TokenizerFile)


@pytest.mark.slow
def test_a_prefix_space_setting_is_read_where_transformers_reads_it(smollm2_tokenizer, tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((smollm2_tokenizer / name).read_bytes())
    _set(folder, add_prefix_space=False)  # what tokenizer.json's ByteLevel says: kept
    assert isinstance(_same_ids(folder), TokenizerFile)
    _set(folder, add_prefix_space=True)  # transformers rebuilds the pre-tokenizer: it answers
    assert not isinstance(_same_ids(folder), TokenizerFile)
    _set(folder, add_prefix_space=None, add_bos_token=True)
    assert not isinstance(_same_ids(folder), TokenizerFile)


def test_a_word_level_gpt2_tokenizer_is_read_from_its_file(tmp_path):
    assert isinstance(_same_ids(build_tiny_gpt2(tmp_path / "gpt2")), TokenizerFile)


def test_bert_with_its_lower_casing_setting_goes_through_transformers(tmp_path):
    folder = build_tiny_bert(tmp_path / "bert")
    if json.loads((folder / "tokenizer_config.json").read_text()).get("do_lower_case") is None:
        _set(folder, do_lower_case=True)
    assert not isinstance(_same_ids(folder), TokenizerFile)


def test_perplexity_imports_neither_transformers_nor_torch(tmp_path):
    model = export_to(build_tiny_gpt2(tmp_path / "hf"), tmp_path / "onnx")
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\nthe dog ran\n" * 20)
    code = (
        "import sys\nfrom pathlib import Path\nfrom onnxopt.evaluate.perplexity import perplexity\n"
        f"print(perplexity(Path({str(model)!r}), Path({str(text)!r}), seq_len=16, limit=4).tokens)\n"
        "print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    tokens, imported = done.stdout.split("\n")[:2]
    assert int(tokens) == 64 and imported == "[]", done.stdout


def test_a_broken_tokenizer_file_is_refused_with_transformers_reason(tmp_path):
    from onnxopt.errors import OnnxoptError

    folder = build_tiny_gpt2(tmp_path / "gpt2")
    (folder / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(OnnxoptError, match="holds no usable tokenizer") as caught:
        load_token_ids(folder)
    assert "onnxopt export" in caught.value.hint
