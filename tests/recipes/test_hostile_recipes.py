"""Hostile recipes (issue 14, the hostile-input family): step names that leave OUT, YAML alias
bombs, huge or endless recipe files, missing data found only after earlier steps ran, and output
folders that are not the recipe's own. Each is refused at load time, or before the first step,
with one short line naming the recipe line where there is one. No test exports a model except
the last, which runs a tiny BERT built in code."""

import json
import os
import time
from pathlib import Path

import pytest

from onnxopt.io.manifest import Manifest
from onnxopt.recipes import checks as recipe_checks
from onnxopt.recipes import schema as recipe
from tests.conftest import assert_clean_error, build_tiny_bert, cells_text

HEAD = "model: null\nsteps:\n  - export: {}\n"  # lines 1-3; each case's mistake comes after


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_line(err: str) -> str:
    return next(line for line in err.splitlines() if line.strip())


# -- 1. step names are folders under OUT -------------------------------------------------------

# ABSOLUTE becomes a path under tmp_path: code without the check writes there, not to /tmp.
BAD_NAMES = ["../../victim", "ABSOLUTE", ".", "..", "a/b", "a\\b", ".hidden", "", "a\0b", "x" * 65, "a b"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_step_name_must_be_a_plain_name(cli, tmp_path, name):
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    # json.dumps gives a YAML double-quoted string: the backslash and the NUL arrive as written.
    path = write(tmp_path, HEAD + f"  - quantize:\n      name: {json.dumps(name)}\n      dynamic: true\n")
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:5:", f"step name {name!r}"[:60], "is not a plain name")
    assert not (tmp_path / "out").exists()


def test_step_name_cannot_reach_a_folder_beside_out(cli, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    out = tmp_path / "runs" / "out"  # OUT/../../victim is the victim
    path = write(tmp_path, HEAD + "  - quantize:\n      name: ../../victim\n      dynamic: true\n")
    code, _o, err = cli("run", path, "-o", out)
    assert_clean_error(code, err, "recipe.yaml:5: step name '../../victim' is not a plain name")
    assert [p.name for p in victim.iterdir()] == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "precious"
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["recipe-state.json", "Recipe-State.JSON"])
def test_step_name_cannot_be_the_state_file(cli, tmp_path, name):
    path = write(tmp_path, HEAD + f"  - quantize: {{name: {name}, dynamic: true}}\n")
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4:", "is reserved")


def test_step_names_differing_only_in_case_clash(cli, tmp_path):
    path = write(
        tmp_path, "model: null\nsteps:\n  - export: {name: fp32}\n  - quantize: {name: FP32, dynamic: true}\n"
    )
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4:", "step name 'FP32' is used twice")


def test_plain_names_are_accepted(tmp_path):
    path = write(
        tmp_path,
        "model: null\nsteps:\n  - export: {name: fp32.v1}\n  - quantize: {name: A_1-x, dynamic: true}\n",
    )
    assert [s.name for s in recipe.load(path).steps] == ["fp32.v1", "A_1-x"]


# -- 2. aliases, and echoed values cut ---------------------------------------------------------


def test_alias_bomb_is_refused_at_once(cli, tmp_path):
    """Nine levels of nine aliases: 387 million values; the old validator built their repr()."""
    levels = ["        - &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"]
    levels += [f"        - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)]
    path = write(tmp_path, HEAD + "  - bench:\n      batch:\n" + "".join(levels))
    start = time.perf_counter()
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert time.perf_counter() - start < 2
    assert_clean_error(code, err, "recipe.yaml:6: YAML aliases and anchors are not allowed in recipes")


@pytest.mark.parametrize(
    "text, line",
    [("name: &n x\n" + HEAD, 1), (HEAD + "  - bench: {batch: [1], seq: *x}\n", 4)],
    ids=["anchor alone", "alias alone"],
)
def test_any_anchor_or_alias_is_refused(cli, tmp_path, text, line):
    code, _o, err = cli("run", write(tmp_path, text), "-o", tmp_path / "out")
    assert_clean_error(code, err, f"recipe.yaml:{line}: YAML aliases and anchors are not allowed")


LONG = "x" * 10_000
LONG_VALUES = {  # YAML limits a plain key to 1024 characters: long keys are explicit (`? KEY`)
    "bad value": HEAD + f"  - quantize: {{dynamic: true, method: {LONG}}}\n",
    "unknown option": HEAD + f"  - quantize:\n      dynamic: true\n      ? {LONG}\n      : 1\n",
    "unknown step": HEAD + f"  - ? {LONG}\n    : {{}}\n",
    "unknown top-level key": HEAD + f"? {LONG}\n: 1\n",
    "input": HEAD + f"  - eval: {{task: sts, input: {LONG}}}\n",
    "missing data": HEAD + f"  - eval: {{task: sts, data: {LONG}.csv}}\n",
}


@pytest.mark.parametrize("text", LONG_VALUES.values(), ids=LONG_VALUES.keys())
def test_echoed_values_are_cut(cli, tmp_path, text):
    code, _o, err = cli("run", write(tmp_path, text), "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:", "xxx...")
    shown = one_line(err).replace(str(tmp_path), "TMP")
    # What is echoed stays short; after "known:" comes the fixed list of the options there are.
    assert "x" * 100 not in shown and len(shown.split("known:")[0]) < 300


def test_a_long_option_value_costs_one_short_line(cli, tmp_path):
    code, _o, err = cli("run", write(tmp_path, LONG_VALUES["bad value"]), "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4: quantize.method: expected one of", "got 'xxxx")
    assert len(one_line(err)) < 300


# -- 3. size, steps, nesting, and files that are not files -------------------------------------


def test_200k_steps_are_refused_quickly(cli, tmp_path):
    path = write(tmp_path, "model: null\nsteps:\n" + "  - export: {}\n" * 200_000)
    start = time.perf_counter()
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert time.perf_counter() - start < 10
    assert_clean_error(code, err, "recipe.yaml", "is larger than 1 MiB")


def test_a_recipe_just_under_the_size_cap_is_refused_quickly(cli, tmp_path):
    path = write(tmp_path, "model: null\nsteps:\n" + "  - export: {}\n" * 65_000)
    assert path.stat().st_size < recipe_checks.MAX_BYTES
    start = time.perf_counter()
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert time.perf_counter() - start < 10
    assert_clean_error(code, err, "recipe.yaml:", "a recipe holds at most")


def test_too_many_steps(cli, tmp_path):
    path = write(
        tmp_path, "model: null\nsteps:\n" + "".join(f"  - export: {{name: s{i}}}\n" for i in range(201))
    )
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:2: 201 steps; a recipe may have at most 200")


def test_deep_nesting_is_refused(cli, tmp_path):
    path = write(tmp_path, HEAD + "  - bench: {batch: " + "[" * 5000 + "1" + "]" * 5000 + "}\n")
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4: nested more than 16 levels deep")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_recipe_is_refused_without_blocking(cli, tmp_path):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)
    start = time.perf_counter()
    code, _o, err = cli("run", fifo, "-o", tmp_path / "out")
    assert time.perf_counter() - start < 2
    assert_clean_error(code, err, f"recipe {fifo} is not a regular file")


@pytest.mark.parametrize("where", ["/dev/zero", "folder"])
def test_device_or_folder_recipe_is_refused(cli, tmp_path, where):
    path = Path(where) if where.startswith("/") else tmp_path
    if not path.exists():
        pytest.skip(f"{path} not here")
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, f"recipe {path} is not a regular file")


UNREADABLE = {
    "bad date": ("name: 2024-13-45\n" + HEAD, 1, "cannot read this entry"),
    "huge int": (HEAD + "  - bench: {seq: " + "9" * 5000 + "}\n", 4, "cannot read this entry"),
    "list key": (HEAD + "  - bench: {[1]: 2}\n", 4, "cannot read this entry"),
    "NUL byte": ("model: null\x00\n", None, "not valid YAML"),
}


@pytest.mark.parametrize("text, line, message", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_values_are_one_line_errors(cli, tmp_path, text, line, message):
    code, _o, err = cli("run", write(tmp_path, text), "-o", tmp_path / "out")
    assert_clean_error(code, err, f"recipe.yaml:{line}:" if line else "recipe.yaml", message)
    assert len(one_line(err)) < 300


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_numbers_must_be_finite(cli, tmp_path, value):
    path = write(tmp_path, HEAD + f"  - bench: {{min_time: {value}}}\n")
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4: bench.min_time: expected a number, 0 or more")


# -- 4. every file a step reads exists before the first step runs ------------------------------

MISSING = {
    "eval data": ("  - eval: {task: sts, data: ../x.csv}\n", "eval.data: ../x.csv does not exist"),
    "quantize eval_data": (
        "  - quantize: {dynamic: true, max_drop: 1, eval_data: dev.csv}\n",
        "quantize.eval_data: dev.csv does not exist",
    ),
    "calib file": (
        "  - quantize: {static: true, calib_data: calib.txt}\n",
        "calib_data: calib.txt does not exist",
    ),
    "calib bare word": ("  - quantize: {static: true, calib_data: wikitext}\n", "wikitext does not exist"),
    "calib local path": (
        "  - prune: {sparsity: 0.5, calib_data: /no/such/dir}\n",
        "/no/such/dir does not exist",
    ),
    "fidelity data": ("  - eval: {reference: 1-export, data: texts.jsonl}\n", "texts.jsonl does not exist"),
    "reference": (
        "  - eval: {task: sts, data: sts.csv, reference: ./fp32}\n",
        "no earlier model step or model folder",
    ),
}


@pytest.mark.parametrize("step, message", MISSING.values(), ids=MISSING.keys())
def test_missing_data_is_reported_before_any_step(cli, tmp_path, step, message):
    (tmp_path / "sts.csv").write_text("a,b,1\n")
    code, _o, err = cli("run", write(tmp_path, HEAD + step), "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4:", message)
    assert not (tmp_path / "out").exists()


def test_data_must_be_a_regular_file(cli, tmp_path):
    (tmp_path / "dev.csv").mkdir()
    code, _o, err = cli(
        "run",
        write(tmp_path, HEAD + "  - eval:\n      task: sts\n      data: dev.csv\n"),
        "-o",
        tmp_path / "o",
    )
    assert_clean_error(code, err, "recipe.yaml:6: eval.data: dev.csv is not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_data_fifo_is_refused(cli, tmp_path):
    os.mkfifo(tmp_path / "calib.txt")
    path = write(tmp_path, HEAD + "  - quantize: {static: true, calib_data: calib.txt}\n")
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4: quantize.calib_data: calib.txt is not a regular file")


def test_data_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "data.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path)  # not where the data is: the recipe's folder is
    steps = (
        "  - quantize: {static: true, calib_data: data.txt}\n  - prune: {sparsity: 0.5, calib_data: o/ds}\n"
    )
    parsed = recipe.load(write(tmp_path / "r", HEAD.replace("null", "gpt2") + steps))
    assert parsed.steps[1].options["calib_data"] == str((tmp_path / "r" / "data.txt").resolve())
    assert parsed.steps[2].options["calib_data"] == "o/ds"  # a `datasets` hub name
    assert parsed.model == "gpt2"  # a hub id


@pytest.mark.parametrize("model", ["./missing", "/no/such/model", "~/no-such-onnxopt-model", "a/b/c"])
def test_missing_local_model_is_refused(cli, tmp_path, model):
    code, _o, err = cli(
        "run", write(tmp_path, f"model: {model}\nsteps:\n  - export: {{}}\n"), "-o", tmp_path / "o"
    )
    assert_clean_error(code, err, f"recipe.yaml:1: model: {model} does not exist")


def test_missing_model_override_is_refused(cli, tmp_path):
    code, _o, err = cli("run", write(tmp_path, HEAD), "--model", "./missing", "-o", tmp_path / "out")
    assert_clean_error(code, err, "--model: ./missing does not exist")


@pytest.mark.parametrize(
    "step, message",
    [
        ("  - eval: {task: sts}\n", "eval: the sts task needs data"),
        ("  - eval: {}\n", "fidelity compares two models"),
        ("  - quantize: {dynamic: true, eval_data: x.csv}\n", "eval_data is used by the max_drop search"),
    ],
)
def test_options_the_step_would_refuse_are_refused_first(cli, tmp_path, step, message):
    code, _o, err = cli("run", write(tmp_path, HEAD + step), "-o", tmp_path / "out")
    assert_clean_error(code, err, "recipe.yaml:4:", message)


# -- 5. OUT is the recipe's own folder ---------------------------------------------------------


def test_non_empty_foreign_out_is_refused(cli, tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, _o, err = cli("run", write(tmp_path, HEAD), "-o", out)
    assert_clean_error(
        code,
        err,
        f"{out} is not a recipe output folder (no recipe-state.json) and is not empty",
        "new or empty",
    )
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_out_that_is_a_file_is_refused(cli, tmp_path):
    (tmp_path / "out").write_text("x")
    code, _o, err = cli("run", write(tmp_path, HEAD), "-o", tmp_path / "out")
    assert_clean_error(code, err, "exists and is not a folder")


def test_step_folder_not_made_by_onnxopt_is_refused(cli, tmp_path):
    out = tmp_path / "out"
    (out / "1-export").mkdir(parents=True)
    (out / "1-export" / "notes.txt").write_text("mine")
    (out / "recipe-state.json").write_text('{"steps": {}}\n')
    code, _o, err = cli("run", write(tmp_path, HEAD), "-o", out)
    assert_clean_error(code, err, f"{out / '1-export'} exists and was not made by onnxopt (no onnxopt.json)")
    assert (out / "1-export" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["model", "model/out", "model-link/out", "parent"])
def test_out_overlapping_the_model_folder_is_refused(cli, tmp_path, where):
    model = tmp_path / "parent" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (tmp_path / "model-link").symlink_to(model)
    (tmp_path / "parent" / "recipe-state.json").write_text('{"steps": {}}\n')  # else refused as foreign
    out = tmp_path / "parent" / where if where != "parent" else tmp_path / "parent"
    if where == "model-link/out":
        out = tmp_path / "model-link" / "out"
    path = write(tmp_path, f"model: {model}\nsteps:\n  - export: {{}}\n")
    code, _o, err = cli("run", path, "-o", out)
    if where == "model":  # OUT is the model folder: foreign and non-empty, refused first as such
        assert_clean_error(code, err, "is not a recipe output folder")
    else:
        assert_clean_error(code, err, "is, contains or lies inside the input model folder")
    assert [p.name for p in model.iterdir()] == ["config.json"]


def test_new_empty_and_recipe_outs_are_accepted(tmp_path):
    for out in (tmp_path / "new" / "out", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        recipe_checks.claim_out(out, None, ["1-export"])
        assert json.loads((out / "recipe-state.json").read_text()) == {"steps": {}}
    (tmp_path / "empty" / "1-export").mkdir()
    Manifest(source="m", task="feature-extraction", opset=17).save(tmp_path / "empty" / "1-export")
    recipe_checks.claim_out(tmp_path / "empty", None, ["1-export"])  # a recipe output: fine


def test_a_real_run_into_an_empty_out_then_a_rerun(cli, tmp_path):
    hf = build_tiny_bert(tmp_path / "hf")
    out = tmp_path / "out"
    out.mkdir()
    path = write(tmp_path, "name: tiny\nmodel: null\nsteps:\n  - export: {name: fp32}\n")
    code, _o, err = cli("run", path, "--model", hf, "-o", out)
    assert code == 0, err
    assert (out / "fp32" / "onnxopt.json").is_file()
    code, stdout, err = cli("run", path, "--model", hf, "-o", out)
    assert code == 0, err
    assert "(unchanged: skipped)" in cells_text(stdout)
    code, _o, err = cli("run", path, "--model", hf, "-o", hf / "out")  # inside the input model
    assert_clean_error(code, err, "lies inside the input model folder")
