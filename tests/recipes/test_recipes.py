"""`onnxopt run RECIPE.yaml`: schema errors with their line, steps run and skipped on a rerun."""

import json
import shutil

import pytest

from onnxopt.recipes import schema as recipe
from tests.conftest import REPO, assert_clean_error, build_tiny_bert, build_tiny_gpt2, cells_text
from tests.conftest import STSB as STSB_FOLDER

RECIPES = REPO / "recipes"
STSB = STSB_FOLDER / "sts-dev.csv"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    if "sts-dev.csv" in path.read_text() and not STSB.is_file():
        pytest.skip("reads STS-B dev, not found beside the repo (data files are checked at load time)")
    parsed = recipe.load(path)
    assert parsed.steps and parsed.steps[0].kind == "export"


P = "model: null\nsteps:\n  - export: {}\n"  # a valid start; the mistake follows on line 4
BAD = [
    ("model: null\nsteps:\n  - export: {}\n  - quantize:\n      static: true\n      calbi: 40\n",
     6, "quantize: unknown option 'calbi'"),
    ("model: null\nsteps:\n  - export: {}\n  - quantize:\n      static: true\n      calib: forty\n",
     6, "quantize.calib: expected a positive integer, got 'forty'"),
    ("model: null\nsteps:\n  - export: {}\n  - quantise: {static: true}\n", 4, "unknown step 'quantise'"),
    ("model: null\nsteps:\n  - export: {}\n  - quantize: {static: true, dynamic: true}\n", 4,
     "set exactly one of static: true, dynamic: true and int4: true"),
    (P + "  - prune: {heads: false}\n", 4, "prune: option 'sparsity' is required"),
    (P + "  - prune: {sparsity: 1.5}\n", 4, "expected a number in [0, 1), got 1.5"),
    ("model: null\nmodel: x\nsteps:\n  - export: {}\n", 2, "duplicate key 'model'"),
    ("model: null\nsteps: [\n", 3, "not valid YAML"),
    ("model: null\nstep:\n  - export: {}\n", 2, "unknown top-level key 'step'"),
    ("model: null\nsteps: []\n", 2, "'steps' must be a non-empty list"),
    ("model: null\nsteps:\n  - export: {}\n  - eval: {task: sts, input: nope}\n", 4,
     "eval.input: no earlier model step named 'nope'"),
    ("model: null\nsteps:\n  - bench: {}\n", 3, "bench: no model to measure yet"),
    (P + "  - bench: {batch: [1, 0]}\n", 4, "bench.batch: expected a list of positive"),
    (P + "  - eval: {task: bleu}\n", 4, "eval.task: expected one of fidelity"),
]  # fmt: skip


@pytest.mark.parametrize("text, line, message", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_recipes_name_the_line(cli, tmp_path, text, line, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    code, _o, err = cli("run", path, "-o", tmp_path / "out")
    assert_clean_error(code, err, f"recipe.yaml:{line}:", message)
    assert not (tmp_path / "out").exists()


def test_missing_recipe(cli, tmp_path):
    code, _o, err = cli("run", tmp_path / "nope.yaml")
    assert_clean_error(code, err, "recipe", "does not exist")


@pytest.fixture(scope="module")
def tiny_gpt2_hf(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


def test_gpt2_recipe_runs_then_skips_then_reruns_what_changed(cli, tiny_gpt2_hf, tmp_path):
    recipe_path = tmp_path / "gpt2.yaml"
    shutil.copy(RECIPES / "gpt2-dynamic-int8.yaml", recipe_path)
    shutil.copy(RECIPES / "gpt2-sample.txt", tmp_path / "gpt2-sample.txt")
    out = tmp_path / "out"
    code, stdout, err = cli("run", recipe_path, "--model", tiny_gpt2_hf, "-o", out)
    assert code == 0, err
    assert "Models made by the recipe" in stdout and "perplexity" in stdout
    assert "loads as ORTModelForCausalLM" in stdout  # verify_loading: true in the recipe
    assert (out / "1-export" / "model.onnx").is_file() and (out / "2-quantize" / "model.onnx").is_file()
    state = json.loads((out / "recipe-state.json").read_text())["steps"]
    assert set(state) == {"1-export", "2-quantize", "perplexity", "4-bench"}
    perplexity = state["perplexity"]["result"]
    assert perplexity["value"] > 1 and perplexity["reference_value"] > 1  # int8 vs the fp32 export
    timings = state["4-bench"]["result"]["timings"]
    assert {t["step"] for t in timings} == {"1-export", "2-quantize"}

    code, stdout, err = cli("run", recipe_path, "--model", tiny_gpt2_hf, "-o", out)
    assert code == 0, err
    assert cells_text(stdout).count("(unchanged: skipped)") == 4

    # A changed option reruns that step and everything that depends on its output.
    recipe_path.write_text(recipe_path.read_text().replace("seq_len: 64", "seq_len: 32"))
    code, stdout, err = cli("run", recipe_path, "--model", tiny_gpt2_hf, "-o", out)
    assert code == 0, err
    assert cells_text(stdout).count("(unchanged: skipped)") == 3
    assert (
        json.loads((out / "recipe-state.json").read_text())["steps"]["4-bench"]["result"]["timings"][0]["seq"]
        == 32
    )


def test_recipe_prune_takes_the_same_defaults_as_the_cli(cli, tmp_path):
    """A recipe that names only the sparsity (and verify_loading, the runner's own) prunes exactly as
    `onnxopt prune --sparsity` does."""
    hf = build_tiny_bert(tmp_path / "hf", hidden=64, heads=4, seed=5)
    recipe_path = tmp_path / "prune.yaml"
    recipe_path.write_text(
        "name: p\nmodel: null\nsteps:\n  - export: {}\n  - prune: {sparsity: 0.5, verify_loading: true}\n"
    )
    code, _o, err = cli("run", recipe_path, "--model", hf, "-o", tmp_path / "out")
    assert code == 0, err
    code, _o, err = cli("prune", tmp_path / "out" / "1-export", "--sparsity", "0.5", "-o", tmp_path / "cli")
    assert code == 0, err

    def prune_step(folder):
        step = json.loads((folder / "onnxopt.json").read_text())["steps"][-1]
        assert step["step"] == "prune"
        return {k: step[k] for k in ("per_layer_floor", "calibration", "layers")}

    from_recipe, from_cli = prune_step(tmp_path / "out" / "2-prune"), prune_step(tmp_path / "cli")
    assert from_recipe["per_layer_floor"] == 0.4 and from_recipe["calibration"]["samples"] == 916
    assert from_recipe == from_cli


@pytest.mark.slow
@pytest.mark.skipif(not STSB.is_file(), reason="STS-B dev split not found beside the repo")
def test_minilm_static_int8_recipe(cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("run", RECIPES / "minilm-static-int8.yaml", "-o", out)
    assert code == 0, err
    state = json.loads((out / "recipe-state.json").read_text())["steps"]
    assert state["accuracy"]["result"]["drop"] < 0.5
    code, stdout, err = cli("run", RECIPES / "minilm-static-int8.yaml", "-o", out)
    assert code == 0 and cells_text(stdout).count("(unchanged: skipped)") == 4
