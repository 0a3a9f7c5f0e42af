"""Fixtures: tiny random-weight models built in code, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
STSB = REPO.parent / "shared" / "data" / "stsb"
_WORDS = (
    "the a an is are was of to in on and or for with by at from this that it be as not but "
    "cat dog man woman "
    "child car bus train city park water food music book sun rain snow "
    "runs plays eats reads sits walks drives "
    "quick slow big small red blue green good bad new old day night model onnx quantize export test sentence "
    "hello world . , ! ?"
).split()


def build_tiny_bert(folder: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A random-weight BERT (hidden 32, 2 layers) with a WordPiece tokenizer over a small vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(_WORDS))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=256,
    )
    BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_hf(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_bert_onnx(tmp_path_factory, tiny_bert_hf) -> Path:
    """tiny BERT exported once through onnxopt's own export path."""
    from onnxopt.export import export

    out = tmp_path_factory.mktemp("onnx") / "fp32"
    export(str(tiny_bert_hf), out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dynamic(tmp_path_factory, tiny_bert_onnx) -> Path:
    from onnxopt.quantization import quantize

    out = tmp_path_factory.mktemp("onnx") / "dyn"
    quantize(tiny_bert_onnx, out, "dynamic")
    return out


@pytest.fixture
def graph_file(tmp_path):
    """Write one of graphs/*.onnxtxt as a binary .onnx file and return its path."""
    from onnxopt import graphs

    def write(name: str) -> Path:
        path = tmp_path / f"{name}.onnx"
        onnx.save(graphs.load(name), str(path))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from onnxopt.cli.app import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr that contains every fragment, and no traceback."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxopt: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
