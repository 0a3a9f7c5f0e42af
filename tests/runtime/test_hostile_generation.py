"""Hostile generation and perplexity requests (issue 26): batches no memory holds, lengths past the
model's positions where config.json says none or lies, graphs whose cache is not what onnxopt
reads, and perplexity text that is one 15 MB line, NUL bytes, or more than --limit asks for. Each
is one line on stderr, exit 2, within seconds and before any session is made, or is read in
bounded memory; each failed on the code before it."""

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import assert_clean_error, export_to
from tests.prune.test_prune_decoders import build_tiny_decoder

GIB = 1 << 30
FAST = ("--runs", "1", "--min-time", "0")
# The CLI, then its own peak resident memory on a last stderr line that `limited` takes off.
_RUN = (
    "import atexit, resource, sys; atexit.register(lambda: sys.stderr.write("
    "f'peak-rss-kib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')); "
    "from onnxopt.cli.app import entry; sys.argv[0] = 'onnxopt'; entry()"
)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """The tiny Llama (rotary positions computed from position_ids: no table in its graph)."""
    hf = build_tiny_decoder("llama", tmp_path_factory.mktemp("hf") / "llama", hidden=64)
    return export_to(hf, tmp_path_factory.mktemp("onnx") / "llama")


def edited(src: Path, dst: Path, graph=None, **config) -> Path:
    """A copy of a model folder with config.json keys set (None: removed) and the graph edited."""
    shutil.copytree(src, dst)
    values = json.loads((dst / "config.json").read_text())
    for key, value in config.items():
        values.pop(key, None) if value is None else values.__setitem__(key, value)
    (dst / "config.json").write_text(json.dumps(values))
    if graph is not None:
        model = onnx.load(str(dst / "model.onnx"))
        graph(model)
        onnx.save(model, str(dst / "model.onnx"))
    return dst


@pytest.fixture
def no_session(monkeypatch):
    """Any session made fails the test: the refusals must come from the files alone."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a session was made before the request was refused")

    from onnxopt.evaluate import generation, task_metrics
    from onnxopt.runtime import generation_bench

    for module in (generation, generation_bench, task_metrics):
        monkeypatch.setattr(module, "make_session", refuse)


def timed(cli, *args) -> tuple[int, str, float]:
    start = time.perf_counter()
    code, _out, err = cli(*args)
    return code, err, time.perf_counter() - start


def limited(*args, address_space: int, timeout: float = 60) -> tuple[int, str, float, float]:
    """The CLI in a process of its own under RLIMIT_AS: (exit code, stderr, seconds, peak RSS MiB)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )
    seconds = time.perf_counter() - start
    lines = done.stderr.splitlines()
    rss = [int(line.split()[1]) / 1024 for line in lines if line.startswith("peak-rss-kib ")]
    err = "\n".join(line for line in lines if not line.startswith("peak-rss-kib "))
    return done.returncode, err, seconds, rss[0] if rss else float("nan")


# --- bench --generate: memory ------------------------------------------------------------------


def test_a_batch_past_the_address_space_is_refused_by_estimate(tiny_gpt2_onnx):
    """--batch 4000 --prompt-len 190 under a 3 GiB `ulimit -v`: the generation needs ~4 GiB, so
    it is refused at once (it was killed at the limit after 21 s, with nothing said before)."""
    code, err, seconds, _rss = limited(
        "bench",
        tiny_gpt2_onnx,
        "--generate",
        "--batch",
        4000,
        "--prompt-len",
        190,
        *FAST,
        address_space=3 * GIB,
    )
    assert_clean_error(code, err, "batch 4000 x 254 tokens needs about", "GiB", "use a smaller --batch")
    assert "ulimit -v" in err and seconds < 10


def test_a_batch_no_machine_holds_is_refused_before_any_session(cli, tiny_gpt2_onnx, no_session):
    """--batch 100000 ended in onnxruntime's arena error, "internal error"; 10**7 (7 TB) is past
    any machine this runs on."""
    code, err, seconds = timed(
        cli, "bench", tiny_gpt2_onnx, "--generate", "--batch", 10**7, "--prompt-len", 100
    )
    assert_clean_error(code, err, "batch 10000000 x 164 tokens needs about", "GiB")
    assert seconds < 10


# --- positions ---------------------------------------------------------------------------------


def test_a_config_without_positions_is_bounded_by_the_graphs_position_table(
    cli, tiny_gpt2_onnx, tmp_path, no_session
):
    model = edited(tiny_gpt2_onnx, tmp_path / "m", n_positions=None)
    code, err, seconds = timed(
        cli, "bench", model, "--generate", "--batch", 1, "--prompt-len", 8, "--new-tokens", 1_000_000_000
    )
    assert_clean_error(code, err, "1000000008 exceeds", "position table of 256 rows", "256 or less")
    assert seconds < 10


@pytest.mark.parametrize(
    "field, new_tokens, message",
    [
        ("n_positions", 300, "position table of 256 rows (its config.json says n_positions 100000)"),
        ("vocab_size", 4, "config.json says vocab_size 100000, but the embedding table has 75 rows"),
    ],
)
def test_a_config_that_lies_is_named(cli, tiny_gpt2_onnx, tmp_path, no_session, field, new_tokens, message):
    model = edited(tiny_gpt2_onnx, tmp_path / "m", **{field: 100_000})
    code, err, _s = timed(
        cli, "bench", model, "--generate", "--batch", 1, "--prompt-len", 8, "--new-tokens", new_tokens
    )
    assert_clean_error(code, err, message)


def test_no_position_limit_anywhere_is_onnxopts_cap(tiny_llama, tmp_path):
    """Rotary angles computed from position_ids: nothing bounds the length; it used to generate
    1e9 tokens without end. In a process of its own: a regression would otherwise hang the run."""
    model = edited(tiny_llama, tmp_path / "m", max_position_embeddings=None)
    args = ("bench", model, "--generate", "--batch", 1, "--prompt-len", 8, "--new-tokens", 1_000_000_000)
    code, err, seconds, _rss = limited(*args, address_space=8 * GIB, timeout=30)
    assert_clean_error(code, err, "exceeds", "32768 positions, onnxopt's cap where neither config.json nor")
    assert seconds < 10


def test_the_rotary_cache_of_a_fused_graph_bounds_the_positions():
    from onnxopt.io.limits import graph_positions

    cos = onnx.numpy_helper.from_array(np.zeros((96, 8), np.float32), "cos")
    node = onnx.helper.make_node(
        "GroupQueryAttention", ["q", "", "", "pk", "pv", "lens", "total", "cos", "cos"], ["o", "k", "v"],
        domain="com.microsoft",
    )  # fmt: skip
    graph = onnx.helper.make_graph([node], "g", [], [], [cos])
    assert graph_positions(onnx.helper.make_model(graph)) == (96, "rotary cache of 96 positions")


def test_eval_generation_refuses_new_tokens_before_any_session(
    cli, tiny_gpt2_onnx, tiny_llama, tmp_path, no_session
):
    """Refused only after 19 s before: the check ran after both sessions and the prompts."""
    for model, positions in (
        (tiny_gpt2_onnx, 256),
        (edited(tiny_llama, tmp_path / "m", max_position_embeddings=None), 2048),
    ):
        args = ("eval", model, "--task", "generation", "--reference", model, "--new-tokens", 1_000_000_000)
        code, err, seconds = timed(cli, *args)
        assert_clean_error(code, err, f"leaves no room for a prompt in {model}'s {positions} positions")
        assert seconds < 10


# --- configs and graphs that lie ---------------------------------------------------------------


def test_a_cache_input_of_another_rank_is_named(cli, tiny_gpt2_onnx, tmp_path, no_session):
    def drop_head_dim(model):
        value = next(i for i in model.graph.input if i.name == "past_key_values.0.key")
        del value.type.tensor_type.shape.dim[3]

    model = edited(tiny_gpt2_onnx, tmp_path / "m", graph=drop_head_dim)
    code, err, _s = timed(
        cli, "bench", model, "--generate", "--batch", 1, "--prompt-len", 8, "--new-tokens", 4
    )
    assert_clean_error(code, err, "cache input past_key_values.0.key has 3 dims, not 4")


def test_a_failure_mid_generation_names_the_model_and_the_likely_cause(cli, tiny_gpt2_onnx, tmp_path):
    """Positions offset by an Add the checks do not follow, and a config.json that claims 100000
    of them: onnxruntime's Gather fails at token 257, as one line naming the model (it was an
    "internal error")."""

    def hide_position_table(model):
        gather = next(n for n in model.graph.node if n.input[1:] == ["position_ids"])
        zero = onnx.numpy_helper.from_array(np.zeros(1, np.int64), "zero")
        add = onnx.helper.make_node("Add", ["position_ids", "zero"], ["shifted_positions"])
        model.graph.initializer.append(zero)
        gather.input[1] = "shifted_positions"
        model.graph.node.insert(0, add)

    model = edited(tiny_gpt2_onnx, tmp_path / "m", n_positions=100_000, graph=hide_position_table)
    args = ("bench", model, "--generate", "--batch", 1, "--prompt-len", 250, "--new-tokens", 16, *FAST)
    code, err, seconds = timed(cli, *args)
    assert_clean_error(
        code, err, f"onnxruntime failed generating with {model} (batch 1, 257 tokens)", "Gather"
    )
    assert "config.json or graph may not hold together" in err and seconds < 30


# --- perplexity --------------------------------------------------------------------------------


def test_nul_bytes_are_refused_by_offset_before_any_session(cli, tiny_gpt2_onnx, tmp_path, no_session):
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"\0" * (5 << 20))
    code, err, seconds = timed(cli, "eval", tiny_gpt2_onnx, "--task", "perplexity", "--data", nul)
    assert_clean_error(code, err, "nul.txt looks binary: NUL bytes at offset 0")
    assert seconds < 10


def test_nul_bytes_later_in_the_text_are_refused_when_reached(cli, tiny_gpt2_onnx, tmp_path):
    text = tmp_path / "late.txt"
    text.write_bytes(b"the cat runs .\n" * 2000 + b"dog\0")
    model = shutil.copytree(tiny_gpt2_onnx, tmp_path / "m")  # eval records into the manifest
    code, err, _s = timed(cli, "eval", model, "--task", "perplexity", "--data", text, "--limit", 10_000)
    assert_clean_error(code, err, "late.txt looks binary: NUL bytes at offset 30003")


def test_a_15_mb_line_is_scored_in_bounded_memory(tiny_gpt2_onnx, tmp_path):
    """Read whole it reached 2.9 GB with no end at 150 s; now a window at a time."""
    line = tmp_path / "line.txt"
    words = np.random.default_rng(0).choice(["the", "cat", "dog", "runs", "big", "red"], 3_000_000)
    line.write_text(" ".join(words))
    model = shutil.copytree(tiny_gpt2_onnx, tmp_path / "m")
    args = ("eval", model, "--task", "perplexity", "--data", line, "--limit", 200)
    code, err, seconds, rss = limited(*args, address_space=4 * GIB, timeout=90)
    assert code == 0, err
    assert rss < 1200 and seconds < 60, (rss, seconds)  # the imports alone: ~630 MiB here
    step = json.loads((model / "onnxopt.json").read_text())["steps"][-1]
    assert step["tokens scored"] == 200 * 128


def test_limit_counts_windows_and_progress_comes_per_window(tiny_gpt2_onnx, tmp_path):
    from onnxopt.evaluate.workflow import evaluate

    text = tmp_path / "text.txt"
    text.write_text("the cat runs in the park .\n" * 20_000)  # 140,000 tokens, a thousand windows
    seen = []
    start = time.perf_counter()
    result = evaluate(
        tiny_gpt2_onnx, task="perplexity", data=str(text), limit=3, seq_len=16, record=False,
        on_progress=lambda stage, done, total: seen.append((stage, done, total)),
    )  # fmt: skip
    assert time.perf_counter() - start < 10
    assert result.extras["tokens scored"] == (48.0, None)
    assert [done for _stage, done, _total in seen] == [0, 1, 2, 3]
    assert {total for _s, _d, total in seen} == {3} and seen[0][0].startswith("perplexity ")


def test_without_limit_perplexity_scores_the_whole_text(tiny_gpt2_onnx, tmp_path):
    """As before --limit applied to perplexity: a default of 64 windows silently cut the text (and
    a resumed search compared its whole-text reference with trials scored on 64 windows)."""
    from onnxopt.evaluate.workflow import evaluate

    text = tmp_path / "text.txt"
    text.write_text("the cat runs in the park .\n" * 200)  # 1,400 tokens: 87 windows of 16
    result = evaluate(tiny_gpt2_onnx, task="perplexity", data=str(text), seq_len=16, record=False)
    assert result.extras["tokens scored"][0] > 64 * 16


def test_streamed_windows_are_those_of_the_whole_text(tiny_gpt2_onnx, tmp_path):
    """Pieces tokenized one at a time give the ids, and so the windows, of the text read whole."""
    from onnxopt.data.samples import load_tokenizer
    from onnxopt.data.textio import text_pieces
    from onnxopt.evaluate.perplexity import windows

    tokenizer = load_tokenizer(tiny_gpt2_onnx)
    text = tmp_path / "text.txt"
    text.write_text("  the cat runs .\n\n\nthe dog sits in the big park " * 40 + "\n red car ")
    lines = [line.strip() for line in text.read_text().splitlines() if line.strip()]
    whole = np.array(tokenizer("\n\n".join(lines))["input_ids"])
    pieces = [np.array(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in text_pieces(text, 7)]
    assert np.array_equal(np.concatenate(pieces), whole)
    found = list(windows(pieces, 16))
    expected = [whole[i : i + 17] for i in range(0, len(whole) - 1, 16)]
    assert len(found) == len(expected) and all(
        np.array_equal(a, b) for a, b in zip(found, expected, strict=True)
    )


def test_the_cgroup_left_leaves_out_reclaimable_page_cache(tmp_path, monkeypatch):
    """memory.current counts file cache; a container that just read a model has much of it."""
    from pathlib import Path

    from onnxopt.runtime import generation_limits

    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{8 * GIB}\n")
    (cgroup / "memory.current").write_text(f"{int(7.5 * GIB)}\n")
    (cgroup / "memory.stat").write_text(f"anon {GIB}\nfile {int(6.5 * GIB)}\ninactive_file {6 * GIB}\n")
    fake = lambda p: Path(str(p).replace("/sys/fs/cgroup", str(cgroup)))  # noqa: E731
    monkeypatch.setattr(generation_limits, "Path", fake)
    assert generation_limits._cgroup_left() == int(6.5 * GIB)  # 8 - (7.5 - 6)
