"""--max-drop on decoders: perplexity on held-back text decides which MatMuls get the wider width
(int4 -> 8 bits, 8 bits -> fp32); the pieces (splice, bisection, roles) and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxopt.passes.quantize_weights import QuantizeWeights
from onnxopt.quantize.mixed_bits import bisect_promotions, role_of, splice
from onnxopt.runtime.sessions import session_for_model
from tests.conftest import REPO, assert_clean_error
from tests.prune.test_prune_decoders import build_tiny_decoder

ROOT = REPO


def _markov_text(words: list[str], lines: int, seed: int = 0) -> list[str]:
    """Sentences where each word is mostly followed by one fixed word: a pattern a tiny model
    learns in seconds, so its perplexity means something."""
    rng = np.random.default_rng(seed)
    follow = dict(zip(words, rng.permutation(words), strict=True))
    found = []
    for _ in range(lines):
        word, sentence = str(rng.choice(words)), []
        for _ in range(12):
            sentence.append(word)
            word = follow[word] if rng.random() < 0.9 else str(rng.choice(words))
        found.append(" ".join(sentence))
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Llama trained for a few seconds on Markov text, exported, and a file of that text:
    random weights predict nothing, so quantization noise moves their perplexity either way; once
    trained, int4 reliably costs perplexity, as on a real model."""
    import torch
    import transformers as hf

    from onnxopt.cli.app import main
    from tests.conftest import _WORDS

    root = tmp_path_factory.mktemp("trained")
    folder = build_tiny_decoder("llama", root / "hf", hidden=64)
    lines = _markov_text(sorted(set(_WORDS)), 400)
    (root / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = hf.AutoTokenizer.from_pretrained(folder)
    model = hf.AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor(tokenizer(" ".join(lines))["input_ids"][: 64 * 64]).reshape(64, 64)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        batch = ids[(step * 8) % 64 : (step * 8) % 64 + 8]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    assert main(["export", str(folder), "-o", str(root / "onnx")]) == 0
    return root / "onnx", root / "text.txt"


def _bits(model: onnx.ModelProto) -> dict[str, int]:
    """Bit width of each MatMulNBits, by the tensor it writes (fp32 MatMuls: 32)."""
    found = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            found[node.output[0]] = next(a.i for a in node.attribute if a.name == "bits")
        elif node.op_type == "MatMul":
            found[node.output[0]] = 32
    return found


@pytest.fixture(scope="module")
def widths(tmp_path_factory):
    """A two-MatMul graph quantized to 4 and to 8 bits: the same tensor names, other widths."""
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
            onnx.helper.make_node("MatMul", ["h", "w2"], ["y"], name="second"),
        ],
        "two",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 64])],
        [onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    low = QuantizeWeights(4, 32).call(model).model
    high = QuantizeWeights(8, 32).call(model).model
    return model, low, high, {"x": rng.standard_normal((4, 64)).astype(np.float32)}


def _run(model, feed):
    return session_for_model(model).run(None, feed)[0]


def test_splice_takes_the_named_nodes_with_their_own_scales(widths):
    model, low, high, feed = widths
    mixed = splice(low, high, {"h"})
    assert _bits(mixed) == {"h": 8, "y": 4}
    # Both quantizers call their scales after the weight: the 8-bit node must read its own.
    names = [t.name for t in mixed.graph.initializer]
    assert len(names) == len(set(names))
    both = splice(low, high, {"h", "y"})
    np.testing.assert_allclose(_run(both, feed), _run(high, feed), rtol=1e-6, atol=1e-6)
    assert not np.allclose(_run(mixed, feed), _run(low, feed))
    np.testing.assert_array_equal(_run(splice(low, high, set()), feed), _run(low, feed))
    # Back to fp32: the original MatMul and its weight.
    fp32 = splice(low, model, {"y"})
    assert _bits(fp32) == {"h": 4, "y": 32}
    assert "w2" in [t.name for t in fp32.graph.initializer]


def _fake_metric(drops_by_count):
    def metric(model):
        return drops_by_count[model]

    return metric


@pytest.mark.parametrize("bound", [0.0, 2.5, 9.0, 10.0])
def test_bisection_finds_the_fewest_widened_within_the_bound(bound):
    ranked = [f"n{i}" for i in range(10)]
    drops = [10.0 - i for i in range(11)]  # widening k nodes: drop 10 - k
    seen = []

    def build(names):
        seen.append(len(names))
        return len(names)

    model, count, trials = bisect_promotions(ranked, build, _fake_metric(drops), bound, lambda *a: None, 10.0)
    want = int(np.ceil(10.0 - bound))
    assert count == want and model == want
    assert len(seen) <= 2 + int(np.ceil(np.log2(10)))  # about log2(candidates) trials, not 10
    assert seen.count(0) == 1  # the start was given, not measured again
    assert trials[0] == {"promoted": 0, "drop": 10.0}


def test_bisection_out_of_reach_keeps_the_best_it_measured():
    drops = [5.0, 4.0, 6.0]  # widening everything is worse than widening one

    model, count, trials = bisect_promotions(["a", "b"], len, _fake_metric(drops), 1.0, lambda *a: None, 5.0)
    assert count == 0 and model == 0 and [t["promoted"] for t in trials] == [0, 2]


def test_roles_are_names_without_layer_numbers():
    assert role_of("/model/layers.17/mlp/down_proj/MatMul") == "/model/layers.#/mlp/down_proj/MatMul"
    assert role_of("/model/layers.3/mlp/down_proj/MatMul") == role_of("/model/layers.29/mlp/down_proj/MatMul")


def test_max_drop_on_a_decoder_widens_what_perplexity_asks_for(cli, trained, tmp_path):
    mode, wide = "--int4", 8
    llama, text = trained
    calib = ("--calib", 16, "--calib-data", text)
    loose = tmp_path / "loose"
    code, stdout, err = cli("quantize", llama, mode, "--max-drop", 1000, *calib, "-o", loose)
    assert code == 0, err
    record = json.loads((loose / "onnxopt.json").read_text())["steps"][-1]["mixed_bits"]
    assert record["reached"] and record["promoted"] == [] and len(record["trials"]) == 1
    assert record["roles"] == []  # within the bound at once: nothing ranked
    # Half the drop of the all-low model: some MatMuls must widen, not necessarily all.
    bound = record["start_drop"] / 2
    assert bound > 0, record
    out = tmp_path / "q"
    code, stdout, err = cli("quantize", llama, mode, "--max-drop", bound, *calib, "-o", out)
    assert code == 0, err
    record = json.loads((out / "onnxopt.json").read_text())["steps"][-1]["mixed_bits"]
    assert record["metric"] == "perplexity" and record["eval_data"] == "held-back calibration text"
    assert record["reached"] == (record["final_drop"] <= bound)
    assert record["trials"][0]["promoted"] == 0 and len(record["roles"]) >= 2
    assert "Accuracy-aware widths" in stdout and "% perplexity" in stdout, stdout
    bits = _bits(onnx.load(str(out / "model.onnx")))
    graph = onnx.load(str(llama / "model.onnx"), load_external_data=False).graph
    # The export's projections, and those packed into one (passes/pack_projections: a packed
    # MatMul writes the tensor it is named after).
    writes = {n.name: n.output[0] for n in graph.node} | {o: o for o in bits if o.endswith("_packed")}
    promoted = {writes[p["node"]] for p in record["promoted"]}
    assert promoted and all(bits[o] == wide for o in promoted)
    low = 4 if mode == "--int4" else 8
    heads = {o.name for o in graph.output}
    assert all(b == low for o, b in bits.items() if o not in promoted | heads and o in writes.values())


def test_max_drop_on_a_dynamic_decoder_measures_perplexity(cli, trained, tmp_path):
    """8-bit weights cost the tiny model nothing measurable, so the bound holds at once; widening
    8 bits to fp32 is the splice test's second half."""
    llama, text = trained
    out = tmp_path / "q"
    code, _out, err = cli("quantize", llama, "--dynamic", "--max-drop", 1, "--calib-data", text, "-o", out)
    assert code == 0, err
    record = json.loads((out / "onnxopt.json").read_text())["steps"][-1]["mixed_bits"]
    assert record["metric"] == "perplexity" and record["kept_as"] == "fp32"
    assert abs(record["start_drop"]) < 1 and record["reached"]
    assert set(_bits(onnx.load(str(out / "model.onnx"))).values()) == {8}


def test_max_drop_on_a_decoder_refuses_sts_pairs(cli, trained, tmp_path):
    llama = trained[0]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a\tb\t1.0\n")
    code, _out, err = cli(
        "quantize", llama, "--int4", "--max-drop", 1, "--eval-data", pairs, "-o", tmp_path / "q"
    )
    assert_clean_error(code, err, "--eval-data takes STS pairs", "perplexity")
    assert not (tmp_path / "q").exists()
