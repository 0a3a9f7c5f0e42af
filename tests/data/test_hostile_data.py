"""Hostile calibration and evaluation data (huge fields and lines, FIFOs, devices, oversized
files), and model inputs onnxopt cannot fill: each is one clean line on stderr, exit 2, or is read
as well as it can be, never a hang, an internal error or gigabytes of memory."""

import csv
import json
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from onnxopt.data.samples import (
    CHARS_PER_TOKEN,
    TokenizedSamples,
    complete_inputs,
    input_types,
    load_tokenizer,
)
from onnxopt.data.sources import FIELD_LIMIT, load_samples
from onnxopt.errors import OnnxoptError
from tests.conftest import assert_clean_error

MIB = 1 << 20
PAIR = "main\tnews\t2012\t{i}\t{score}\t{a}\t{b}\n"


@pytest.fixture
def default_csv_limit():
    """Python's own csv field limit (131,072), as in a fresh process, for the test's length."""
    previous = csv.field_size_limit(131_072)
    yield
    csv.field_size_limit(previous)


@pytest.fixture
def fifo(tmp_path):
    """Makes FIFOs. Should anything open one for reading, a helper opens the writing end and
    closes it, so that a regression reads an empty file and fails instead of hanging the run."""
    made: list[Path] = []
    done = threading.Event()

    def unblock():
        while not done.wait(0.2):
            for path in list(made):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # ENXIO: nobody is reading it
                    pass

    def make(name: str) -> Path:
        os.mkfifo(tmp_path / name)
        made.append(tmp_path / name)
        return tmp_path / name

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    yield make
    done.set()
    thread.join()


def _sts_rows(n: int, long_field: int = 0, at: int = 1) -> str:
    words = "a man dog cat plays runs eats red blue car train park food music book".split()
    rows = []
    for i in range(n):
        a = " ".join(words[(i + k) % len(words)] for k in range(5))
        b = " ".join(words[(i * 3 + k) % len(words)] for k in range(5))
        b = "x" * long_field if i == at and long_field else b
        rows.append(PAIR.format(i=i, score=f"{i % 5}.0", a=a, b=b))
    return "".join(rows)


# --- fields and lines over the limits ---------------------------------------------------------


def test_a_50_mb_csv_field_is_one_error_naming_file_and_line(tmp_path):
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("short one\nanother\n")
        f.write("x" * 50_000_000 + "\n")
    with pytest.raises(OnnxoptError) as err:
        load_samples(str(big), 10, "0")
    assert "big.csv line 3: a field is over 1 MiB (1,048,576 characters)" in err.value.message
    assert "seq_len x 32" in err.value.hint


def test_quantize_refuses_a_csv_field_over_1_mib(cli, tiny_bert_onnx, tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("text\nfirst sample\nsecond\n" + "word " * (FIELD_LIMIT // 5 + 1) + "\n")
    out = tmp_path / "q"
    args = (
        "quantize",
        tiny_bert_onnx,
        "--static",
        "--calib",
        4,
        "--calib-data",
        big,
        "--text-column",
        "text",
    )
    code, _o, err = cli(*args, "-o", out)
    assert_clean_error(code, err, "big.csv line 4: a field is over 1 MiB", "cut to seq_len x 32")
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("long.txt", "fine\n" + "y" * (FIELD_LIMIT + 1) + "\n", "long.txt line 2: a line is over 1 MiB"),
        (
            "long.jsonl",
            '"fine"\n' + json.dumps({"text": "y" * (FIELD_LIMIT + 1)}),
            "line 2: a field is over 1 MiB",
        ),
        (
            "bare.jsonl",
            '"fine"\n' + json.dumps("y" * (FIELD_LIMIT + 1)),
            "bare.jsonl line 2: a field is over",
        ),
        ("long.tsv", "a\tb\n" + "z" * (17 * MIB) + "\n", "long.tsv line 2: a field is over 1 MiB"),
        (
            "wide.csv",
            "a,b\n" + ",".join(["w" * 1000] * 17_000) + "\n",
            "wide.csv line 2: a line is over 16 MiB",
        ),
    ],
)
def test_every_calibration_format_bounds_what_it_reads(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(OnnxoptError, match=re.escape(fragment)):
        load_samples(str(path), 10, "1" if name.endswith(("csv", "tsv")) else None)


def test_any_csv_error_names_the_file_and_line(tmp_path):
    from onnxopt.data.sources import read_rows

    path = tmp_path / "open.csv"
    path.write_text('a,b\nc,"never closed\n')
    with path.open(newline="") as f, pytest.raises(OnnxoptError) as err:
        list(read_rows(f, path, strict=True))
    assert "open.csv line 2 is not valid csv: unexpected end of data" in err.value.message


def test_csv_field_limit_is_put_back(tmp_path, default_csv_limit):
    path = tmp_path / "c.csv"
    path.write_text("text\none\ntwo\n")
    assert load_samples(str(path), 10, "text") == ["one", "two"]
    assert csv.field_size_limit() == 131_072  # the csv module's limit is process-wide


def test_sts_fields_over_python_s_csv_limit_are_read(cli, tiny_bert_onnx, tmp_path, default_csv_limit):
    """A 200 kB sentence used to end in "internal error" (csv: field larger than field limit)."""
    data = tmp_path / "pairs.csv"
    data.write_text(_sts_rows(6, long_field=200_000))
    model = shutil.copytree(tiny_bert_onnx, tmp_path / "m")  # eval records into the manifest
    code, out, err = cli("eval", model, "--task", "sts", "--data", data)
    assert code == 0, err
    assert "spearman_x100" in out


def test_sts_and_labelled_fields_over_1_mib_name_file_and_line(
    cli, tiny_bert_onnx, tmp_path, default_csv_limit
):
    data = tmp_path / "pairs.csv"
    data.write_text(_sts_rows(6, long_field=FIELD_LIMIT + 1, at=2))
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "sts", "--data", data)
    assert_clean_error(code, err, "pairs.csv line 3: a field is over 1 MiB")
    table = tmp_path / "labelled.csv"
    table.write_text("text,label\nfine,pos\n" + "v" * (FIELD_LIMIT + 1) + ",neg\n")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "classification", "--data", table)
    assert_clean_error(code, err, "labelled.csv line 3: a field is over 1 MiB")


def test_labelled_fields_over_python_s_csv_limit_are_read(tmp_path, default_csv_limit):
    from onnxopt.evaluate.task_metrics import load_labelled

    table = tmp_path / "labelled.csv"
    table.write_text("text,label\nfine,pos\n" + "v" * 200_000 + ",neg\nshort row\n")
    rows = load_labelled(table, None, "label")
    assert [(len(texts[0]), label) for texts, label in rows] == [(4, "pos"), (200_000, "neg")]


# --- text cut before tokenizing ---------------------------------------------------------------


class _Recording:
    """A tokenizer that records the longest text it was given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, *texts, **kwargs):
        flat = [t for part in texts for t in ([part] if isinstance(part, str) else part)]
        self.longest = max([self.longest, *map(len, flat)])
        return self.tokenizer(*texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.mark.parametrize("seq_len", [16, 128])
def test_long_samples_give_the_same_tokens_as_before(tiny_bert_onnx, seq_len):
    tokenizer = load_tokenizer(tiny_bert_onnx)
    types = {"input_ids": np.int64, "attention_mask": np.int64, "token_type_ids": np.int64}
    # Four times past the cut (a pair of longer texts takes the tokenizer minutes; see clip_text).
    long = "the quick dog runs in the park " * (seq_len * 4)
    samples = [long, ("a man plays music", long), (long, long), "word " * 5000]
    recording = _Recording(tokenizer)
    got = list(TokenizedSamples(samples, recording, types, seq_len))
    assert recording.longest == seq_len * CHARS_PER_TOKEN
    for sample, feed in zip(samples, got, strict=True):
        pair = (sample,) if isinstance(sample, str) else sample
        want = tokenizer(*pair, truncation=True, max_length=seq_len, return_tensors="np")
        for name in types:
            np.testing.assert_array_equal(feed[name], want[name])


def test_eval_cuts_text_before_tokenizing(tiny_bert_onnx, monkeypatch, tmp_path):
    from onnxopt.evaluate import sts as evaluate
    from onnxopt.io import model_files
    from onnxopt.runtime.sessions import make_session

    ref = model_files.resolve(tiny_bert_onnx)
    recording = _Recording(load_tokenizer(tiny_bert_onnx))
    session = make_session(ref.onnx_path, "cpu")
    types = input_types(model_files.load(ref, load_weights=False))
    texts = ["a dog runs", "the cat " * 100_000]
    emb = evaluate.embed(session, recording, types, texts, seq_len=32)
    assert recording.longest == 32 * CHARS_PER_TOKEN and emb.shape[0] == 2
    cut = [texts[0], texts[1][:5000]]  # the same batch layout, so fp32 gives the same numbers
    full = evaluate.embed(session, load_tokenizer(tiny_bert_onnx), types, cut, seq_len=32)
    np.testing.assert_array_equal(emb, full)  # the same 32 tokens either way


def test_task_metrics_cut_text_before_tokenizing(tmp_path, tmp_path_factory, monkeypatch):
    from onnxopt.evaluate import task_metrics
    from tests.conftest import build_tiny_bert, export_to

    recordings = []

    def recording_tokenizer(folder):
        recordings.append(_Recording(load_tokenizer(folder)))
        return recordings[-1]

    monkeypatch.setattr(task_metrics, "load_tokenizer", recording_tokenizer)
    classifier = export_to(
        build_tiny_bert(tmp_path_factory.mktemp("hf") / "cls", head="classification"), tmp_path / "cls"
    )
    rows = [(("the cat " * 50_000,), "pos"), (("a dog",), "neg")]
    task_metrics.classification_accuracy(classifier, rows, seq_len=16)
    assert recordings[-1].longest == 16 * CHARS_PER_TOKEN
    qa = export_to(build_tiny_bert(tmp_path_factory.mktemp("hf") / "qa", head="qa"), tmp_path / "qa")
    context = "the cat sits in the park " * 20_000
    example = task_metrics.QaExample("1", "who sits ?", context, ["the cat"])
    predictions = task_metrics.qa_predictions(qa, [example], seq_len=32)
    assert recordings[-1].longest == 32 * CHARS_PER_TOKEN
    assert predictions["1"] in context[: 32 * CHARS_PER_TOKEN]


# --- FIFOs, devices and oversized files -------------------------------------------------------

_CALIB = ("quantize", "MODEL", "--static", "--calib", 4, "-o", "OUT", "--calib-data", "DATA")
READERS = {  # each data reader: the file suffix it expects, and a command that reaches it
    "calib text": (".txt", _CALIB),
    "calib csv": (".csv", (*_CALIB, "--text-column", 0)),
    "calib tsv": (".tsv", (*_CALIB, "--text-column", 0)),
    "calib jsonl": (".jsonl", _CALIB),
    "sts": (".csv", ("eval", "MODEL", "--task", "sts", "--data", "DATA")),
    "max-drop sts": (
        ".csv",
        ("quantize", "MODEL", "--dynamic", "--max-drop", 1, "--eval-data", "DATA", "-o", "OUT"),
    ),
    "classification": (".csv", ("eval", "MODEL", "--task", "classification", "--data", "DATA")),
    "qa": (".json", ("eval", "MODEL", "--task", "qa", "--data", "DATA")),
    "perplexity": (".txt", ("eval", "MODEL", "--task", "perplexity", "--data", "DATA")),
}


def _command(reader: str, model: Path, data: Path | str, out: Path) -> list:
    places = {"MODEL": model, "DATA": data, "OUT": out}
    return [places.get(arg, arg) if isinstance(arg, str) else arg for arg in READERS[reader][1]]


@pytest.mark.parametrize("reader", list(READERS))
def test_a_fifo_is_refused_by_name_before_reading(cli, tiny_bert_onnx, tmp_path, fifo, reader):
    suffix = READERS[reader][0]
    out = tmp_path / "out"
    code, _o, err = cli(*_command(reader, tiny_bert_onnx, fifo(f"data{suffix}"), out))
    assert_clean_error(code, err, f"data{suffix} is a FIFO, not a regular file")
    assert not out.exists()


@pytest.mark.parametrize("reader", list(READERS))
def test_a_device_is_refused_by_name_before_reading(cli, tiny_bert_onnx, tmp_path, reader):
    out = tmp_path / "out"
    code, _o, err = cli(*_command(reader, tiny_bert_onnx, "/dev/zero", out))
    assert_clean_error(code, err, "/dev/zero is a device, not a regular file")
    assert not out.exists()


def test_files_read_whole_are_capped(cli, tiny_bert_onnx, tmp_path):
    text, squad = tmp_path / "big.txt", tmp_path / "big.json"
    with text.open("wb") as f:
        f.truncate(17 * MIB)  # sparse: costs no disk, but its size is what onnxopt checks
    with squad.open("wb") as f:
        f.truncate(257 * MIB)
    # Perplexity text is streamed (any size, --limit windows of it): this one is zeros, not text.
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "perplexity", "--data", text)
    assert_clean_error(code, err, "big.txt looks binary: NUL bytes at offset 0")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "qa", "--data", squad)
    assert_clean_error(code, err, "big.json is 257 MiB, over the 256 MiB onnxopt reads")


def test_the_read_itself_stops_at_the_cap(monkeypatch):
    """/proc files say they are empty and are not: the cap holds on what is read, not only on the size."""
    from onnxopt.evaluate import task_metrics

    monkeypatch.setattr(task_metrics, "SQUAD_LIMIT", 64)
    assert Path("/proc/self/maps").stat().st_size == 0
    with pytest.raises(OnnxoptError, match="maps is over the 64 bytes onnxopt reads"):
        task_metrics.load_squad(Path("/proc/self/maps"))


def test_missing_and_folder_paths_are_named(cli, tiny_bert_onnx, tmp_path):
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "sts", "--data", tmp_path / "nope.csv")
    assert_clean_error(code, err, "nope.csv does not exist", "sts-dev.csv")
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "qa", "--data", tmp_path)
    assert_clean_error(code, err, "is a folder, not a regular file")
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"main\tx\t2012\t1\t1.0\tok\tok\n" + "caf\xe9\n".encode("latin-1"))
    code, _o, err = cli("eval", tiny_bert_onnx, "--task", "sts", "--data", bad)
    assert_clean_error(code, err, "latin.csv is not UTF-8 text (line 1 or after)")


# --- model inputs onnxopt cannot fill ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("past_key_values.0.key", "a KV-cache input of a layout onnxopt does not know"),
        ("past.0", "a KV-cache input"),
        ("decoder_input_ids", "an encoder-decoder (seq2seq) model, which this command does not run yet"),
        ("decoder_attention_mask", "an encoder-decoder (seq2seq) model"),
        ("encoder_outputs", "an encoder-decoder (seq2seq) model"),
        ("pixel_values", "an image model; onnxopt handles text models"),
        ("input_features", "an audio model; onnxopt handles text models"),
        ("input_values", "an audio model; onnxopt handles text models"),
    ],
)
def test_an_input_onnxopt_cannot_fill_says_what_kind_it_is(name, kind):
    types = {"input_ids": np.int64, name: np.float32}
    with pytest.raises(OnnxoptError) as err:
        complete_inputs({"input_ids": np.ones((1, 3), dtype=np.int64)}, types)
    assert f"input {name!r} that onnxopt cannot fill: {kind}" in err.value.message
    if "KV-cache" not in kind:  # T5 must not be told to export without the cache
        assert "past_key_values" not in str(err.value)


def test_an_unknown_input_keeps_the_general_hint():
    with pytest.raises(OnnxoptError, match="input 'mystery' that onnxopt cannot fill") as err:
        complete_inputs({"input_ids": np.ones((1, 3), dtype=np.int64)}, {"mystery": np.float32})
    assert "past_key_values" in err.value.hint and "onnxopt export" in err.value.hint
