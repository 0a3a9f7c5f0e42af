"""Rule skip_layernorm: SkipLayerNormalization  =>  [Add bias] + Sum + LayerNormalization."""

import numpy as np
import onnx

from onnxopt.passes.cpu_int8_layout import SkipLayerNorm
from onnxopt.passes.rewrite import apply_rule
from tests.passes.util import feed_for, graph, node, nodes, run


def test_it_becomes_sum_and_layernorm_and_one_reading_its_mean_stays():
    model = graph("skip_layernorm")
    result = apply_rule(SkipLayerNorm(), model)
    assert result.rewritten == 1
    assert result.skipped == {
        "sln_mean_read": "SkipLayerNorm unfusing: its mean, inverse std or sum output is read"
    }
    assert nodes(model) == [
        ("sln_bias", "Add", ["x", "bias"], ["sln_biased"]),
        ("sln_sum", "Sum", ["sln_biased", "skip"], ["sln_sum"]),
        ("sln", "LayerNormalization", ["sln_sum", "gamma", "beta"], ["y"]),
        ("sln_mean_read", "SkipLayerNormalization", ["y", "skip", "gamma", "beta"], ["z", "mean"]),
        ("read_mean", "Identity", ["mean"], ["m"]),
    ]
    ln = node(model, "sln")
    assert ln.domain == "" and {a.name: onnx.helper.get_attribute_value(a) for a in ln.attribute} == {
        "axis": -1,
        "epsilon": np.float32(1e-5),
    }


def test_the_unfused_ops_compute_what_the_fused_one_did():
    model = graph("skip_layernorm")
    feed = feed_for(model)
    want = run(model, feed)
    apply_rule(SkipLayerNorm(), model)
    for got, expected in zip(run(model, feed), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_without_a_bias_there_is_no_add():
    model = graph("skip_layernorm")
    del node(model, "sln").input[4:]
    apply_rule(SkipLayerNorm(), model)
    assert [n[1] for n in nodes(model)][:2] == ["Sum", "LayerNormalization"]
    assert nodes(model)[0][2] == ["x", "skip"]


def test_before_opset_17_there_is_no_layernormalization_to_become():
    model = graph("skip_layernorm")
    model.opset_import[0].version = 16
    before = nodes(model)
    result = apply_rule(SkipLayerNorm(), model)
    assert result.rewritten == 0 and nodes(model) == before
    assert (
        result.skipped["sln"] == "SkipLayerNorm unfusing: LayerNormalization needs opset 17, the model has 16"
    )
