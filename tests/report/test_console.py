"""Output that is not a terminal (logs, pipes, CI) is 100 columns wide: every line fits, the step
tables folding their cells rather than running to 150 columns as they did."""

import os
import subprocess
import sys

from onnxopt.report.console import LOG_WIDTH


def _stdout(*args) -> str:
    """The CLI in its own process, stdout a pipe and COLUMNS unset, as in a CI log."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    code = "import sys; from onnxopt.cli.app import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_tables_fit_100_columns_when_stdout_is_not_a_terminal(tiny_bert_onnx, tmp_path):
    assert LOG_WIDTH == 100
    printed = _stdout("quantize", tiny_bert_onnx, "--static", "--calib", 4, "-o", tmp_path / "q")
    printed += _stdout("optimize", tiny_bert_onnx, "-o", tmp_path / "o")
    assert "what changed" in printed  # the step tables were printed
    wide = [line for line in printed.splitlines() if len(line) > LOG_WIDTH]
    assert not wide, "\n".join(wide)


def test_a_long_counted_stage_says_how_far_it_is_and_the_time_left(monkeypatch, capsys):
    from onnxopt.report import console

    now = [0.0]
    monkeypatch.setattr(console.time, "perf_counter", lambda: now[0])
    update = console._plain_lines(timed=False)
    for at, stage, done, total in [
        (0, "smooth", 0, 0),  # the stage begins
        (10, "smooth", 1, 64),  # too soon to say
        (40, "smooth", 16, 64),  # 16 of 64 in 40 s: 48 left at that pace
        (50, "smooth", 17, 64),  # said 10 s ago
        (100, "quantize-int4-offset", 0, 112),  # a new stage
    ]:
        now[0] = float(at)
        update(stage, done, total)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "smooth",
        "smooth 16/64, about 2.0 min left",
        "quantize-int4-offset (112)",
    ]


def test_smoothing_and_int4_report_their_groups_and_matmuls(tmp_path_factory):
    from functools import partial

    import onnx

    from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
    from onnxopt.data.sources import embedded_samples
    from onnxopt.graph_queries.weight_grids import weight_only_error
    from onnxopt.passes.quantize_weights import QuantizeWeights
    from onnxopt.passes.smooth import Smooth
    from onnxopt.quantize.calibrate import collect_channel_stats
    from tests.passes.test_fuse_decoder_attention import exported

    folder = exported(tmp_path_factory, "llama")
    model = onnx.load(str(folder / "model.onnx"))
    feeds = list(TokenizedSamples(embedded_samples(4), load_tokenizer(folder), input_types(model), 16))
    groups, matmuls = [], []
    error = partial(weight_only_error, block=32, algo="offset")

    def stats(graph, tensors):
        return collect_channel_stats(graph, feeds, tensors)

    Smooth(stats, error=error, on_group=lambda d, t: groups.append((d, t)))(model)
    QuantizeWeights(4, 32, "offset", on_progress=lambda d, t: matmuls.append((d, t)))(model)
    assert groups and groups == [(i, groups[0][1]) for i in range(groups[0][1])]
    total = matmuls[-1][1]
    assert matmuls == [(i, total) for i in range(1, total + 1)] and total >= 14  # 7 per layer, LM head
