"""FuseRmsNorm (passes/fuse_rms_norm.py): the exporters' eight-node RMSNorm becomes
SimplifiedLayerNormalization, a residual Add before it joins it as SkipSimplifiedLayerNormalization
whose sum output keeps feeding what read the Add; the outputs stay the same; what does not match
keeps its nodes and says why."""

import numpy as np

from onnxopt.passes.fuse_rms_norm import FuseRmsNorm, RmsNormRule
from onnxopt.passes.rewrite import apply_rule
from tests.passes.util import feed_for, graph, nodes, run, unchanged_by


def _ops(model):
    return [op for _name, op, _i, _o in nodes(model)]


def test_both_norms_fuse_and_the_residual_add_joins_the_first():
    model = graph("rms_norm")
    result = unchanged_by(FuseRmsNorm(), model)
    assert result.details == {"SimplifiedLayerNormalization": 2, "SkipSimplifiedLayerNormalization": 1}
    assert _ops(result.model) == [
        "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization", "Add",
    ]  # fmt: skip
    skip = result.model.graph.node[0]
    assert list(skip.input) == ["x", "r", "gamma"] and list(skip.output) == ["y", "", "", "h"]
    assert list(result.model.graph.node[1].input) == ["x", "gamma"]  # no Add before it: plain norm
    feed = feed_for(model, rows=5)
    for got, want in zip(run(result.model, feed), run(model, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_norm_whose_intermediate_is_read_elsewhere_is_left_with_its_reason():
    model = graph("rms_norm")
    model.graph.output.add().name = "rt"  # the square root, now also a graph output
    rule = RmsNormRule()
    result = apply_rule(rule, model)
    assert result.rewritten == 1
    assert result.skipped["gamma_mul"] == "rms norm: an intermediate is read elsewhere"
    assert "Sqrt" in _ops(model)


def test_a_mul_that_is_no_norm_says_so():
    model = graph("swiglu")
    result = FuseRmsNorm()(model)
    assert result.details == {"SimplifiedLayerNormalization": 0, "SkipSimplifiedLayerNormalization": 0}
    assert _ops(result.model) == _ops(model)
    skipped = apply_rule(RmsNormRule(), graph("swiglu")).skipped
    assert set(skipped.values()) == {"rms norm: no 1-D weight"}
