"""Fixtures: tiny random-weight models built in code, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

# The suite's peak memory, printed after the durations (tests/memory_watch.py).
pytest_plugins = ["tests.memory_watch"]

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


def build_tiny_bert(
    folder: Path,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    head: str = "base",
    vocab_size: int | None = None,
) -> Path:
    """A random-weight BERT (hidden 32, 2 layers) with a WordPiece tokenizer over a small vocabulary.

    head: "base" (BertModel), "classification" (2 labels, neg/pos), "qa" (span start/end) or "mlm"
    (masked-LM logits over the vocabulary)."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertModel,
        BertTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(_WORDS))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size or len(vocab),  # larger: a big embedding; the tokenizer stays small
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=512,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )
    cls = {
        "base": BertModel,
        "classification": BertForSequenceClassification,
        "qa": BertForQuestionAnswering,
        "mlm": BertForMaskedLM,
    }
    cls[head](config).eval().save_pretrained(folder)
    return folder


def build_tiny_gpt2(folder: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A random-weight GPT-2 (Conv1D projections) with a word-level tokenizer over the same vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *sorted(set(_WORDS))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=1,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


def export_to(folder: Path, out: Path) -> Path:
    from onnxopt.export.workflow import export

    export(str(folder), out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_hf(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_bert_onnx(tmp_path_factory, tiny_bert_hf) -> Path:
    """tiny BERT exported once through onnxopt's own export path. Shared by many tests, so none may
    write into it (eval and bench record into the manifest: copy it first); checked at the end."""
    from onnxopt.export.workflow import export

    out = tmp_path_factory.mktemp("onnx") / "fp32"
    export(str(tiny_bert_hf), out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    yield out
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before, "a test wrote into the shared tiny_bert_onnx fixture; copy it first"


@pytest.fixture(scope="session")
def tiny_bert_dynamic(tmp_path_factory, tiny_bert_onnx) -> Path:
    from onnxopt.quantize.workflow import quantize

    out = tmp_path_factory.mktemp("onnx") / "dyn"
    quantize(tiny_bert_onnx, out, mode="dynamic")
    return out


@pytest.fixture(scope="session")
def tiny_gpt2_onnx(tmp_path_factory) -> Path:
    hf = build_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")
    return export_to(hf, tmp_path_factory.mktemp("onnx") / "gpt2")


@pytest.fixture(scope="session")
def tiny_gpt2_int4(tmp_path_factory, tiny_gpt2_onnx) -> Path:
    from onnxopt.quantize.workflow import quantize

    out = tmp_path_factory.mktemp("onnx") / "gpt2-int4"
    quantize(tiny_gpt2_onnx, out, mode="int4", block_size=16)
    return out


@pytest.fixture
def graph_file(tmp_path):
    """Write one of graphs/*.onnxtxt as a binary .onnx file and return its path."""
    from onnxopt.io import text_graphs

    def write(name: str) -> Path:
        path = tmp_path / f"{name}.onnx"
        onnx.save(text_graphs.load(name), str(path))
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


def error_lines(err: str) -> list[str]:
    """stderr without the progress lines (stderr is not a terminal in tests, so each stage prints one)."""
    from onnxopt.report.console import PROGRESS

    return [line for line in err.splitlines() if line.strip() and not line.startswith(PROGRESS)]


def cells_text(stdout: str) -> str:
    """Printed tables as one line of words, borders dropped: stdout is not a terminal in tests,
    so tables are 100 columns wide and a long cell wraps onto the row's next line."""
    return " ".join(stdout.translate({ord(c): " " for c in "│┃"}).split())


def text_words() -> list[str]:
    """The test vocabulary's plain words (what the tiny tokenizers know)."""
    return [w for w in _WORDS if w.isalpha()]


def write_sts_pairs(path: Path, count: int, rng) -> Path:
    """STS-B-format rows over the test vocabulary, a third of the pairs identical, scores drawn
    from `rng` (which the caller may go on drawing from)."""
    words, rows = text_words(), []
    for i in range(count):
        first = " ".join(rng.choice(words) for _ in range(6))
        second = first if i % 3 == 0 else " ".join(rng.choice(words) for _ in range(6))
        rows.append(f"main\tMSRvid\t2012\t{i:04d}\t{rng.uniform(0, 5):.2f}\t{first}\t{second}")
    path.write_text("\n".join(rows) + "\n")
    return path


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2, exactly one error line on stderr that contains every fragment, and no traceback.
    Progress lines (stderr is not a terminal here, so each stage prints one) are not errors."""
    from onnxopt.report.console import PROGRESS

    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(PROGRESS)]
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxopt: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
