"""Smoothing on decoders: RMSNorm outputs (Llama, Qwen2, Mistral), fused or as the exporter writes
them, fold 1/s into gamma. Small graphs first, then a tiny random Llama exported with its KV cache
and quantized through the whole workflow."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
from onnxopt.data.sources import embedded_samples
from onnxopt.evaluate.fidelity import output_fidelity
from onnxopt.graph_queries.smooth_groups import find_groups
from onnxopt.io import model_files
from onnxopt.passes.smooth import Smooth
from onnxopt.quantize.calibrate import collect_channel_stats
from onnxopt.quantize.workflow import quantize
from tests.passes.util import inits, node, run, unchanged_by

HIDDEN = 8


def _const(name, value):
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.float32))
    )


def _rms_nodes(kind: str, x: str, gamma: str, out: str, tag: str = "") -> list:
    """x / sqrt(mean(x^2) + eps) * gamma in the ways exporters write it, or fused."""
    n = [
        _const(f"two{tag}", 2.0),
        _const(f"one{tag}", 1.0),
        _const(f"eps{tag}", 1e-6),
        helper.make_node("Constant", [], [f"axes{tag}"], value=numpy_helper.from_array(np.array([-1]))),
    ]
    mean = [helper.make_node("ReduceMean", [f"sq{tag}", f"axes{tag}"], [f"ms{tag}"], name=f"mean{tag}")]
    if kind == "llama":  # transformers' LlamaRMSNorm through torch.onnx: rsqrt as Div(1, Sqrt), a Cast
        return n + [
            helper.make_node("Pow", [x, f"two{tag}"], [f"sq{tag}"]),
            *mean,
            helper.make_node("Add", [f"ms{tag}", f"eps{tag}"], [f"var{tag}"]),
            helper.make_node("Sqrt", [f"var{tag}"], [f"rms{tag}"]),
            helper.make_node("Div", [f"one{tag}", f"rms{tag}"], [f"inv{tag}"]),
            helper.make_node("Mul", [x, f"inv{tag}"], [f"z{tag}"]),
            helper.make_node("Cast", [f"z{tag}"], [f"zc{tag}"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [gamma, f"zc{tag}"], [out], name=f"norm{tag}"),
        ]
    if kind == "reciprocal":
        return n + [
            helper.make_node("Mul", [x, x], [f"sq{tag}"]),
            *mean,
            helper.make_node("Add", [f"eps{tag}", f"ms{tag}"], [f"var{tag}"]),
            helper.make_node("Sqrt", [f"var{tag}"], [f"rms{tag}"]),
            helper.make_node("Reciprocal", [f"rms{tag}"], [f"inv{tag}"]),
            helper.make_node("Mul", [f"inv{tag}", x], [f"z{tag}"]),
            helper.make_node("Mul", [f"z{tag}", gamma], [out], name=f"norm{tag}"),
        ]
    if kind == "div":
        return n + [
            helper.make_node("Pow", [x, f"two{tag}"], [f"sq{tag}"]),
            *mean,
            helper.make_node("Add", [f"ms{tag}", f"eps{tag}"], [f"var{tag}"]),
            helper.make_node("Sqrt", [f"var{tag}"], [f"rms{tag}"]),
            helper.make_node("Div", [x, f"rms{tag}"], [f"z{tag}"]),
            helper.make_node("Mul", [gamma, f"z{tag}"], [out], name=f"norm{tag}"),
        ]
    inputs = [x, "skip", gamma] if kind.startswith("Skip") else [x, gamma]
    domain = "com.microsoft" if kind.startswith("Skip") else ""
    return [helper.make_node(kind, inputs, [out], name=f"norm{tag}", domain=domain, epsilon=1e-6)]


def _rms_model(kind: str) -> onnx.ModelProto:
    """RMSNorm h of x (gamma: channel 2 is 20x the others), h @ w, and h + x (a consumer without
    weights, which must see the original h)."""
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 1.5, HIDDEN).astype(np.float32)
    gamma[2] *= 20
    w = rng.normal(size=(HIDDEN, 6)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, HIDDEN])]
    if kind.startswith("Skip"):
        inputs.append(helper.make_tensor_value_info("skip", TensorProto.FLOAT, [None, HIDDEN]))
    body = _rms_nodes(kind, "x", "gamma", "h") + [
        helper.make_node("MatMul", ["h", "w"], ["y"], name="proj"),
        helper.make_node("Add", ["h", "x"], ["r"], name="residual"),
    ]
    graph = helper.make_graph(
        body,
        "rms",
        inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y", "r")],
        [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(w, "w")],
    )
    opsets = [helper.make_opsetid("", 23 if kind == "RMSNormalization" else 18)]
    if kind.startswith("Skip"):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _feeds(model, count=4, rows=16):
    rng = np.random.default_rng(1)
    names = [i.name for i in model.graph.input]
    return [{n: rng.normal(size=(rows, HIDDEN)).astype(np.float32) for n in names} for _ in range(count)]


KINDS = ["llama", "reciprocal", "div", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"]


@pytest.mark.parametrize("kind", [*KINDS, "RMSNormalization"])
def test_an_rmsnorm_output_is_smoothed_into_gamma_and_the_weight_rows(kind):
    model = _rms_model(kind)
    feeds = _feeds(model)
    try:
        run(model, feeds[0])
    except Exception as exc:  # RMSNormalization needs an onnxruntime with opset 23
        pytest.skip(f"onnxruntime cannot run {kind}: {type(exc).__name__}")
    (group,), skipped = find_groups(model)
    assert (group.tensor, group.producer, group.fold, skipped) == ("h", "norm", "norm", {})
    assert group.weights == [("proj", "w", False)] and group.others == [("residual", 0)]
    stats = collect_channel_stats(model, feeds, ["h"])
    result = unchanged_by(Smooth(stats, alphas=(0.5,), only_if_better=False), model)
    assert result.details["smoothed"][0]["residual_muls"] == 1
    before, after = inits(model), inits(result.model)
    scales = after["h_smooth_scale"]
    gamma = after[node(result.model, "norm").input[group.params[0]]]
    np.testing.assert_allclose(gamma, before["gamma"] / scales, rtol=1e-6)
    np.testing.assert_allclose(after["w"], before["w"] * scales[:, None], rtol=1e-6)
    assert scales.argmax() == 2  # the outlier channel is divided the most
    for feed in feeds:
        for got, want in zip(run(result.model, feed), run(model, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_mul_by_a_vector_that_is_no_normalization_is_left_alone():
    model = _rms_model("llama")
    norm = node(model, "norm")
    norm.input[1] = "x"  # gamma * x: a per-channel scale, but not of a normalized tensor
    assert find_groups(model) == ([], {})


def test_a_gamma_shared_with_another_norm_is_copied_before_rescaling():
    """One gamma initializer read directly by one RMSNorm and through an Identity by another (how
    exporters share equal tensors): smoothing the first leaves the second's gamma alone."""
    model = _rms_model("llama")
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [None, HIDDEN]))
    graph.node.append(helper.make_node("Identity", ["gamma"], ["gamma_shared"], name="share"))
    graph.node.extend(_rms_nodes("llama", "x2", "gamma_shared", "h2", "_2"))
    graph.node.append(helper.make_node("MatMul", ["h2", "w"], ["y2"], name="proj_2"))
    graph.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, None))
    groups, _ = find_groups(model)
    assert [g.tensor for g in groups] == ["h", "h2"]  # w is shared too: both groups rescale a copy
    feeds = _feeds(model)
    stats = collect_channel_stats(model, feeds, ["h2"])  # the second one only
    result = unchanged_by(Smooth(stats, alphas=(0.5,), only_if_better=False), model)
    assert [g["tensor"] for g in result.details["smoothed"]] == ["h2"]
    after = inits(result.model)
    assert node(result.model, "norm").input[0] == "gamma" and node(result.model, "proj").input[1] == "w"
    np.testing.assert_array_equal(after["gamma"], inits(model)["gamma"])
    assert "share" not in {n.name for n in result.model.graph.node}  # its only reader now has a copy
    for feed in feeds:
        for got, want in zip(run(result.model, feed), run(model, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# The tiny Llama: channels 3, 17 and 42 of every RMSNorm output made 50x larger through gamma,
# the matching input rows of the projections they feed divided by 50, so the function is the same.
OUTLIERS, FACTOR = [3, 17, 42], 50.0


def build_tiny_llama(folder):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.conftest import _WORDS

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *sorted(set(_WORDS))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(config).eval()
    pairs = [(model.model.norm, [model.lm_head])]
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        pairs.append((layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]))
        pairs.append((layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]))
    with torch.no_grad():
        for norm, linears in pairs:
            norm.weight[OUTLIERS] *= FACTOR
            for linear in linears:  # torch stores (out, in): the input rows are columns here
                linear.weight[:, OUTLIERS] /= FACTOR
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from optimum.exporters.onnx import main_export

    from onnxopt.io.manifest import Manifest

    hf = build_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")
    out = tmp_path_factory.mktemp("onnx") / "llama"
    task = "text-generation-with-past"
    main_export(str(hf), output=out, task=task, do_validation=False, library_name="transformers")
    opset = onnx.load(str(out / "model.onnx"), load_external_data=False).opset_import[0].version
    Manifest(source=str(hf), task=task, opset=opset).save(out)
    return out


def _llama_feeds(folder, model, start=0, count=12):
    """Prefill feeds (empty past), from embedded sentences calibration did not see when start >= 16."""
    samples = embedded_samples(start + count)[start:]
    return list(TokenizedSamples(samples, load_tokenizer(folder), input_types(model), 64))


def test_every_rmsnorm_of_a_llama_is_a_group_and_smoothing_it_is_exact(tiny_llama):
    model = model_files.load(model_files.resolve(tiny_llama))
    groups, skipped = find_groups(model)
    norms = [f"/model/layers.{i}/{n}_layernorm/Mul_1" for i in range(2) for n in ("input", "post_attention")]
    assert [g.producer for g in groups] == [*norms, "/model/norm/Mul_1"] and skipped == {}
    projections = [[f"/model/layers.{i}/{p}/MatMul" for p in names] for i in range(2) for names in (
        ("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj"), ("mlp/gate_proj", "mlp/up_proj")
    )] + [["/lm_head/MatMul"]]  # fmt: skip
    assert [[w[0] for w in g.weights] for g in groups] == projections
    assert all(g.others == [] for g in groups)  # pre-norm: the residual reads the norm's input
    feeds = _llama_feeds(tiny_llama, model, 0, 8)
    stats = collect_channel_stats(model, feeds, [g.tensor for g in groups])
    for group in groups:  # the planted channels are the largest
        assert set(np.argsort(stats[group.tensor].absmax)[-3:]) == set(OUTLIERS)
    result = unchanged_by(Smooth(stats, alphas=(0.5,), only_if_better=False), model)
    assert len(result.details["smoothed"]) == len(groups)
    for feed in feeds:  # logits and every present key/value
        for got, want in zip(run(result.model, feed), run(model, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_smoothing_brings_int8_llama_outputs_back_to_fp32(tiny_llama, tmp_path, mode):
    model = model_files.load(model_files.resolve(tiny_llama))
    feeds = _llama_feeds(tiny_llama, model, 16, 12)
    cosine = {}
    for smooth in (False, True):
        out = tmp_path / f"{mode}-{smooth}"
        result = quantize(tiny_llama, out, mode=mode, calib=16, smooth=smooth)
        assert len(result.options["smooth"]) == (5 if smooth else 0)
        cosine[smooth] = output_fidelity(out, tiny_llama, feeds).min_cosine
    # Measured (min cosine of the logits over 12 prompts): dynamic 0.965 -> 0.9999, static 0.935 -> 0.998.
    assert cosine[True] > 0.99 and 1 - cosine[True] < (1 - cosine[False]) / 5, cosine


def test_swiglu_products_are_groups_folded_into_up_and_exact(tiny_llama):
    model = model_files.load(model_files.resolve(tiny_llama))
    groups, _skipped = find_groups(model, gates=True)
    gates = [g for g in groups if g.fold == "gate"]
    # act(gate) * up, folded into up's columns; SiLU's own x * sigmoid(x) reads gate and is no group.
    assert [g.producer for g in gates] == [f"/model/layers.{i}/mlp/up_proj/MatMul" for i in range(2)]
    assert [[w[0] for w in g.weights] for g in gates] == [
        [f"/model/layers.{i}/mlp/down_proj/MatMul"] for i in range(2)
    ]
    assert len(find_groups(model)[0]) == len(groups) - 2  # off unless asked (int4 asks)
    feeds = _llama_feeds(tiny_llama, model, 0, 8)
    stats = collect_channel_stats(model, feeds, [g.tensor for g in groups])
    result = unchanged_by(Smooth(stats, alphas=(0.5,), only_if_better=False, gates=True), model)
    assert len(result.details["smoothed"]) == len(groups)
    for feed in feeds:
        for got, want in zip(run(result.model, feed), run(model, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_smooth_collects_the_statistics_of_its_own_groups(tiny_llama):
    # Given a collector, Smooth finds its groups itself (here with gates), so a caller cannot
    # calibrate another set of tensors than the one it smooths; the model is the same byte for byte.
    model = model_files.load(model_files.resolve(tiny_llama))
    feeds = _llama_feeds(tiny_llama, model, 0, 8)
    asked = []

    def collect(m, tensors):
        asked.append(list(tensors))
        return collect_channel_stats(m, feeds, tensors)

    lazy = unchanged_by(Smooth(collect, alphas=(0.5,), only_if_better=False, gates=True), model)
    tensors = [g.tensor for g in find_groups(model, gates=True)[0]]
    stats = collect_channel_stats(model, feeds, tensors)
    eager = Smooth(stats, alphas=(0.5,), only_if_better=False, gates=True)(model)
    assert asked == [tensors] and len(lazy.details["smoothed"]) == len(tensors)
    assert lazy.model.SerializeToString() == eager.model.SerializeToString()
    assert lazy.details == eager.details
