import json

from tests.conftest import assert_clean_error


def test_bench_two_models_interleaved_with_json(cli, tiny_bert_onnx, tiny_bert_dynamic, tmp_path):
    out = tmp_path / "r" / "bench.json"
    code, stdout, err = cli(
        "bench",
        tiny_bert_onnx,
        tiny_bert_dynamic,
        "--batch",
        "1,4",
        "--seq-len",
        16,
        "--runs",
        3,
        "--min-time",
        0,
        "--threads",
        1,
        "--json",
        out,
    )
    assert code == 0, err
    assert "Latency in ms, batch 1, seq 16" in stdout and "Latency in ms, batch 4, seq 16" in stdout
    results = json.loads(out.read_text())["results"]
    assert len(results) == 4
    first = [r for r in results if r["model"] == str(tiny_bert_onnx)]
    assert all(r["speedup"] == 1.0 for r in first)
    for r in results:
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput"] > 0 and r["size_bytes"] > 0 and r["runs"] == 3
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]


def test_bench_bare_graph(cli, graph_file, tmp_path):
    code, stdout, err = cli(
        "bench", graph_file("linear"), "--batch", "2", "--runs", 2, "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    assert "Latency in ms, batch 2" in stdout
    (row,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["model"].endswith("linear.onnx") and row["batch"] == 2


def test_bench_bad_values(cli, tiny_bert_onnx, tmp_path):
    code, _o, err = cli("bench", tiny_bert_onnx, "--batch", "0")
    assert_clean_error(code, err, "--batch takes positive integers")
    code, _o, err = cli("bench", tiny_bert_onnx, "--runs", "0")
    assert_clean_error(code, err, "--runs must be a positive integer, got 0")
    code, _o, err = cli("bench", tmp_path / "missing")
    assert_clean_error(code, err, "does not exist")
    code, _o, err = cli("bench", tiny_bert_onnx, "--seq-len", "abc")
    assert_clean_error(code, err, "--seq-len")


def test_min_time_adds_runs_for_fast_models(graph_file):
    from onnxopt.io import model_files
    from onnxopt.runtime.measure import bench

    ref = model_files.resolve(graph_file("linear"))
    (plain,) = bench([ref], [1], 4, runs=3).timings
    (longer,) = bench([ref], [1], 4, runs=3, min_seconds=0.05).timings
    assert plain.runs == 3
    assert longer.runs > 3
