"""`onnxopt search` (issue 18): the space (built in, or a YAML file checked like a recipe), the
strategy (cheapest first, points under a budget-breaking ancestor skipped, the same trials
whatever runs at once), a search on a tiny BERT end to end (trials.jsonl, the fronts, OUT/best and
its recipe rebuilding the same model, a killed search resumed without redoing a trial), the same
trial keys on a local Ray with 2 CPUs, perplexity on the tiny GPT-2, the recipe step `search:`,
and every bad input refused in one line before any work."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import pytest

from onnxopt.search import jobs
from onnxopt.search.points import points
from onnxopt.search.space import Space, default_space
from onnxopt.search.strategy import DONE, Outcome, Plan
from onnxopt.search.workflow import search
from tests.conftest import assert_clean_error, cells_text, text_words, write_sts_pairs

SPACE = """\
prune:
  sparsity: [0, 0.5]
  calib: 16
  heads: true
quantize:
  mode: [none, dynamic, static]
  calib: 8
  method: minmax
  smooth: null
"""
FAST = {"batch": (1, 4), "seq_len": 32, "min_time": 0.02, "runs": 3}
KEYS = ["dynamic", "static", "s0.5", "s0.5+dynamic", "s0.5+static"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """STS pairs and text over the test vocabulary, and the space file."""
    folder = tmp_path_factory.mktemp("search-data")
    rng = random.Random(0)
    write_sts_pairs(folder / "sts.csv", 40, rng)
    words = text_words()
    (folder / "text.txt").write_text(
        "\n".join(" ".join(rng.choice(words) for _ in range(16)) for _ in range(12))
    )
    (folder / "space.yaml").write_text(SPACE)
    return {"sts": folder / "sts.csv", "text": folder / "text.txt", "space": folder / "space.yaml"}


@pytest.fixture(scope="module")
def local_search(tiny_bert_onnx, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "S"
    result = search(
        tiny_bert_onnx, out, max_drop=3.0, data=str(inputs["sts"]), space=str(inputs["space"]), **FAST
    )
    return result, out


def _lines(out: Path, name: str = "trials.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the space ---------------------------------------------------------------------------------


def test_default_spaces_cover_pruning_quantization_and_int4_for_decoders():
    encoder = {p.key: p for p in points(default_space(decoder=False))}
    assert {
        "static",
        "dynamic",
        "s0.5",
        "s0.5+static",
        "s0.5-no-heads+static",
        "s0.7+dynamic-no-smooth",
    } <= set(encoder)
    assert encoder["s0.5-no-heads"].prune == {"sparsity": 0.5, "heads": False}
    assert encoder["dynamic"].quantize == {"mode": "dynamic", "smooth": None}  # no calibration method
    assert "dynamic-entropy" not in encoder  # a method dynamic int8 does not read names no trial
    order = [p.key for p in points(default_space(decoder=False))]
    assert order.index("s0.3") < order.index("s0.3+static") < order.index("s0.5+static")
    assert order.index("s0.7-no-heads+dynamic") < order.index("static-entropy")  # variants come last
    decoder = {p.key for p in points(default_space(decoder=True))}
    assert {"int4", "int4-b128", "s0.5+int4", "s0.25+dynamic"} <= decoder


BAD_SPACES = [
    ("prunes:\n  sparsity: 0.5\n", 1, "unknown section 'prunes'"),
    ("prune:\n  sparsty: [0, 0.5]\n", 2, "prune: unknown option 'sparsty'"),
    ("prune:\n  sparsity: [0, 1.5]\n", 2, "prune.sparsity: expected a number in [0, 1), got 1.5"),
    ("quantize:\n  calib: 8\n  mode: [none, int3]\n", 3, "quantize.mode: expected one of none, static"),
    ("quantize:\n  method: []\n", 2, "quantize.method: expected a value or a list of values"),
    ("session:\n  ep: [tpu]\n", 2, "session.ep: expected one of cpu"),
    ("prune: [0.5]\n", 1, "prune: expected a mapping of options"),
    ("prune:\n  sparsity: &s 0.5\n", 2, "YAML aliases and anchors are not allowed in space files"),
]  # fmt: skip


@pytest.mark.parametrize("text, line, message", BAD_SPACES, ids=[b[2][:28] for b in BAD_SPACES])
def test_a_bad_space_file_is_refused_by_its_line(cli, tiny_bert_onnx, inputs, tmp_path, text, line, message):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    out = tmp_path / "S"
    code, _o, err = cli(
        "search", tiny_bert_onnx, "-o", out, "--max-drop", 1, "--data", inputs["sts"], "--space", space
    )
    assert_clean_error(code, err, f"space.yaml:{line}: {message}")
    assert not out.exists()


# -- the strategy ------------------------------------------------------------------------------


def _plan_run(plan: Plan, drops: dict[str, float], slots: int, seed: int) -> list[str]:
    """Run a plan as an executor would, `slots` at a time, finishing in a random order."""
    rng, running, ran = random.Random(seed), [], []
    while True:
        start, _skipped = plan.next(slots - len(running))
        for point in start:
            plan.started(point.key)
            running.append(point.key)
        if not running:
            return ran
        key = running.pop(rng.randrange(len(running)))
        ran.append(key)
        plan.finish(key, Outcome(DONE, drops[key]))


def test_a_point_under_a_budget_breaking_ancestor_is_skipped_and_parallelism_changes_nothing():
    space = Space(prune={"sparsity": (0.0, 0.3, 0.5, 0.7)}, quantize={"mode": ("none", "static", "dynamic")})
    found = points(space)
    drops = {p.key: 0.1 for p in found} | {"s0.5": 0.9, "s0.3+dynamic": 0.8}
    plan = Plan(found, max_drop=0.5)
    ran = _plan_run(plan, drops, slots=1, seed=0)
    skipped = {k: o.reason for k, o in plan.outcomes.items() if o.status == "skipped"}
    # s0.5 breaks: its quantized children and every higher sparsity go; s0.3+dynamic breaks: so do
    # the higher sparsities' dynamic points (inherited reasons name the first ancestor that broke).
    assert set(skipped) == {"s0.5+static", "s0.5+dynamic", "s0.7", "s0.7+static", "s0.7+dynamic"}
    assert skipped["s0.5+static"] == "cheaper s0.5 already drops 0.90 > 0.5"
    assert ran == ["static", "dynamic", "s0.3", "s0.3+static", "s0.3+dynamic", "s0.5"]
    for slots, seed in [(slots, seed) for slots in (2, 3, 8) for seed in range(10)]:
        assert sorted(_plan_run(Plan(found, max_drop=0.5), drops, slots, seed)) == sorted(ran)
        # Under a budget, the same first N whatever runs at once.
        assert sorted(_plan_run(Plan(found, 0.5, budget=4), drops, slots, seed)) == sorted(ran[:4])


# -- a search end to end -----------------------------------------------------------------------


def test_search_records_every_trial_and_writes_the_best_with_its_recipe(local_search, cli, tmp_path):
    result, out = local_search
    lines = _lines(out)
    assert lines[0]["key"] == "reference" and lines[0]["speedup"] == {"1": 1.0, "4": 1.0}
    trials = {t["key"]: t for t in lines[1:] if t["status"] != "skipped"}
    skipped = {t["key"]: t for t in lines[1:] if t["status"] == "skipped"}
    assert set(trials) | set(skipped) == set(KEYS) and [t.key for t in result.trials] == [
        k for k in KEYS if k in trials or k in skipped
    ]
    for t in trials.values():
        assert t["status"] == "done", t
        assert t["metric"] == "spearman_x100" and t["drop"] == pytest.approx(lines[0]["value"] - t["value"])
        assert set(t["p50_ms"]) == set(t["speedup"]) == set(t["reference_p50_ms"]) == {"1", "4"}
        assert t["size_bytes"] > 0 and (out / t["model"] / "model.onnx").is_file()
        assert t["within_budget"] == (t["drop"] <= 3.0)
    for t in skipped.values():  # skipped for a real reason: a cheaper trial that broke the budget
        ancestor = t["reason"].split()[1]
        assert trials[ancestor]["drop"] > 3.0, t
    # The best: the fastest at batch 4 within the budget; rebuilt exactly by its recipe.
    fits = [t for t in trials.values() if t["within_budget"]]
    assert result.best.key == max(fits, key=lambda t: t["speedup"]["4"])["key"]
    assert result.front_latency and result.front_latency[0] in {*trials, "reference"}
    assert (out / "pareto.png").exists() is False  # the CLI draws it; the library returns data
    code, _o, err = cli("run", out / "best" / "recipe.yaml", "-o", tmp_path / "R")
    assert code == 0, err
    rebuilt = sorted((tmp_path / "R").glob("*/model.onnx"))[-1]
    assert _sha(rebuilt) == _sha(out / "best" / "model.onnx")


def test_a_killed_search_resumes_without_redoing_a_finished_trial(
    tiny_bert_onnx, inputs, tmp_path, monkeypatch
):
    out, calls = tmp_path / "S", {"evaluate": 0, "build": 0}
    evaluate, build = jobs.evaluate_model, jobs.build_step

    def counted_evaluate(*args, kill_at=None):
        calls["evaluate"] += 1
        if calls["evaluate"] == kill_at:
            raise KeyboardInterrupt  # as Ctrl-C or a kill lands: mid-trial
        return evaluate(*args)

    def counted_build(*args):
        calls["build"] += 1
        return build(*args)

    options = dict(max_drop=100.0, data=str(inputs["sts"]), space=str(inputs["space"]), **FAST)
    monkeypatch.setattr(jobs, "evaluate_model", lambda *a: counted_evaluate(*a, kill_at=3))
    with pytest.raises(KeyboardInterrupt):
        search(tiny_bert_onnx, out, **options)
    finished = [t["key"] for t in _lines(out)[1:]]
    assert finished == KEYS[:2]
    monkeypatch.setattr(jobs, "evaluate_model", counted_evaluate)
    monkeypatch.setattr(jobs, "build_step", counted_build)
    calls.update(evaluate=0, build=0)
    result = search(tiny_bert_onnx, out, **options)
    assert result.resumed == 2 and calls["evaluate"] == len(KEYS) - 2
    assert calls["build"] == 3 - 1  # s0.5 (built before the kill, in trial 3), s0.5+dynamic, s0.5+static
    assert [t["key"] for t in _lines(out)[1:]] == KEYS  # each trial once
    calls.update(evaluate=0, build=0)
    assert search(tiny_bert_onnx, out, **options).resumed == len(KEYS) and calls == {
        "evaluate": 0,
        "build": 0,
    }


def test_the_cli_prints_the_fronts_and_draws_the_plot(cli, tiny_bert_onnx, inputs, tmp_path):
    out = tmp_path / "S"
    args = ["--max-drop", 100, "--data", inputs["sts"], "--space", inputs["space"], "--budget", 2]
    args += ["--batch", "1,4", "--seq-len", 32, "--min-time", 0.02, "--runs", 3]
    code, stdout, err = cli("search", tiny_bert_onnx, "-o", out, *args, "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "Pareto front: spearman_x100 vs speedup at batch 4" in stdout and "vs size" in stdout
    assert "2 done, 0 failed, 0 skipped of 5 points; 3 not tried" in stdout
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "r.json").read_text())["best"]["key"] in KEYS[:2]


@pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="ray is not installed")
def test_a_search_on_a_local_ray_runs_the_same_trials(local_search, tiny_bert_onnx, inputs, tmp_path):
    local, _out = local_search
    options = dict(max_drop=3.0, data=str(inputs["sts"]), space=str(inputs["space"]), **FAST)
    result = search(tiny_bert_onnx, tmp_path / "S", executor="ray", ray_cpus=2, **options)

    def seen(r):
        return [(t.key, t.status, None if t.value is None else round(t.value, 6)) for t in r.trials]

    assert seen(result) == seen(local)
    assert result.front_size == local.front_size


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_perplexity_is_the_metric_of_a_causal_lm(kind, tiny_gpt2_onnx, tmp_path_factory, inputs, tmp_path):
    from tests.prune.test_prune_decoders import exported_decoder

    model = tiny_gpt2_onnx if kind == "gpt2" else exported_decoder(tmp_path_factory, "llama")
    space = tmp_path / "space.yaml"
    space.write_text(
        "prune: {sparsity: [0, 0.5], calib: 8}\nquantize: {mode: [none, dynamic, int4], block_size: 32}"
    )
    result = search(model, tmp_path / "S", max_drop=1e6, data=str(inputs["text"]), space=str(space), **FAST)
    assert result.task == "perplexity" and not result.higher_is_better
    assert [t.key for t in result.trials] == ["dynamic", "int4", "s0.5", "s0.5+dynamic", "s0.5+int4"]
    for t in result.trials:
        assert t.status == "done" and t.metric == "perplexity", t
        assert t.drop == pytest.approx(t.value - result.reference.value)  # an increase is a drop
    assert result.best is not None and (result.best_folder / "recipe.yaml").is_file()


def test_the_recipe_step_search(cli, tiny_bert_onnx, inputs, tmp_path):
    recipe = tmp_path / "r.yaml"
    step = (
        f"max_drop: 100, data: {inputs['sts']}, space: {inputs['space']}, budget: 1, batch: [1], seq_len: 32"
    )
    recipe.write_text(f"model: {tiny_bert_onnx}\nsteps:\n  - search: {{{step}, min_time: 0.02, runs: 3}}\n")
    code, stdout, err = cli("run", recipe, "-o", tmp_path / "out")
    assert code == 0, err
    state = json.loads((tmp_path / "out" / "recipe-state.json").read_text())["steps"]["1-search"]
    assert (
        state["result"]["best"] == "dynamic"
        and (tmp_path / "out" / "1-search" / "best" / "model.onnx").is_file()
    )
    code, stdout, err = cli("run", recipe, "-o", tmp_path / "out")
    assert code == 0 and "(unchanged: skipped)" in cells_text(stdout)
    recipe.write_text(
        f"model: {tiny_bert_onnx}\nsteps:\n  - search: {{max_dorp: 1, data: {inputs['sts']}}}\n"
    )
    code, _o, err = cli("run", recipe, "-o", tmp_path / "bad")
    assert_clean_error(code, err, "r.yaml:3: search: unknown option 'max_dorp'")


# -- bad input: one line, exit 2, nothing written ------------------------------------------------


D = ["--data", "DATA"]
M = ["--max-drop", "1"]
BAD_ARGS = [
    (["--max-drop", "-1", *D], ["--max-drop must be a number, 0 or more, got -1.0"]),
    (["--max-drop", "nan", *D], ["--max-drop must be a number, 0 or more, got nan"]),
    (["--max-drop", "x", *D], ["Invalid value for '--max-drop'"]),
    (D, ["Missing option '--max-drop'"]),
    (M, ["Missing option '--data'"]),
    ([*M, "--data", "MISSING"], ["--data", "does not exist"]),
    ([*M, *D, "--budget", "3", "--time", "1m"], ["give --budget or --time, not both"]),
    ([*M, *D, "--time", "soon"], ["--time takes a duration such as 90s, 20m or 1h, got 'soon'"]),
    ([*M, *D, "--address", "auto"], ["--address names a Ray cluster"]),
    ([*M, *D, "--space", "MISSING"], ["space file", "does not exist"]),
    ([*M, *D, "--executor", "dask"], ["Invalid value for '--executor'"]),
]  # fmt: skip


@pytest.mark.parametrize("args, fragments", BAD_ARGS, ids=[" ".join(b[0]) for b in BAD_ARGS])
def test_bad_arguments_are_refused_in_one_line(cli, tiny_bert_onnx, inputs, tmp_path, args, fragments):
    values = [
        str(inputs["sts"]) if a == "DATA" else str(tmp_path / "nope") if a == "MISSING" else a for a in args
    ]
    code, _o, err = cli("search", tiny_bert_onnx, "-o", tmp_path / "S", *values)
    assert_clean_error(code, err, *fragments)
    assert not (tmp_path / "S").exists()


def test_executor_ray_without_ray_says_how_to_install_it(cli, tiny_bert_onnx, inputs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as where it is not installed
    args = ["--max-drop", 1, "--data", inputs["sts"], "--executor", "ray"]
    code, _o, err = cli("search", tiny_bert_onnx, "-o", tmp_path / "S", *args)
    assert_clean_error(
        code, err, "--executor ray needs Ray, which is not installed", "pip install 'onnxopt[ray]'"
    )
    assert not (tmp_path / "S").exists()


def test_out_that_is_not_a_search_folder_is_refused(cli, tiny_bert_onnx, inputs, tmp_path):
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "mine.txt").write_text("keep")
    code, _o, err = cli(
        "search", tiny_bert_onnx, "-o", tmp_path / "S", "--max-drop", 1, "--data", inputs["sts"]
    )
    assert_clean_error(code, err, "is not a search output folder (no search.json) and is not empty")
    assert [p.name for p in (tmp_path / "S").iterdir()] == ["mine.txt"]
    code, _o, err = cli(
        "search", tiny_bert_onnx, "-o", tiny_bert_onnx / "S", "--max-drop", 1, "--data", inputs["sts"]
    )
    assert_clean_error(code, err, "lies inside the input model folder")
