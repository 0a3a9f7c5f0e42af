"""The pass contract (onnx-ir's in_place / changes_input) and Pipeline as a pass that nests."""

import pytest
from onnx import helper

from onnxopt.passes import Pass, PassResult, Pipeline
from onnxopt.passes.base import FunctionalPass, InPlacePass, PassContractError
from tests.passes.util import graph, unchanged_by


class AddRelu(FunctionalPass):
    """Functional: appends a Relu after the graph output, on the copy FunctionalPass makes (or on
    the model itself when its caller gives it up); `copied` records which, call by call."""

    name = "add-relu"

    def __init__(self):
        self.copied = []

    def apply(self, out, original):
        assert out == original  # a copy made once before the rewrite, or the model given up
        self.copied.append(out is not original)
        old = out.graph.output[0].name
        out.graph.node.append(helper.make_node("Relu", [old], [f"{old}_relu"], name=f"{old}_relu"))
        out.graph.output[0].name = f"{old}_relu"
        return PassResult(out, True, {"added": f"{old}_relu"})


class RenameGraph(InPlacePass):
    """In place: renames the graph."""

    name = "rename"

    def call(self, model):
        model.graph.name = "renamed"
        return PassResult(model, True, {})


class Liar(Pass):
    """Declares itself functional but hands back its input."""

    name = "liar"

    def call(self, model):
        return PassResult(model, False, {})


def test_a_functional_pass_returns_a_new_model_and_leaves_its_input():
    result = unchanged_by(AddRelu(), graph("linear"))
    assert [n.op_type for n in result.model.graph.node] == ["MatMul", "Add", "Relu"]


def test_the_declared_contract_is_checked_by_identity():
    model = graph("linear")
    with pytest.raises(PassContractError, match="'liar' is declared not in place"):
        Liar()(model)

    class Copier(RenameGraph):
        def call(self, model):
            return AddRelu().call(model)

    with pytest.raises(PassContractError, match="declared in place but returned another model"):
        Copier()(model)
    assert RenameGraph()(model).model is model and model.graph.name == "renamed"


def test_nested_pipelines_report_their_steps_flattened_in_order():
    seen = []
    inner = Pipeline([AddRelu(), AddRelu()], name="inner")
    outer = Pipeline([AddRelu(), inner, Pipeline([], name="empty"), AddRelu()], name="outer")
    model, reports = outer.run(graph("linear"), on_step=seen.append)
    assert seen == ["add-relu"] * 4
    assert [r.details["added"] for r in reports] == [
        "y_relu",
        "y_relu_relu",
        "y_relu_relu_relu",
        "y_relu_relu_relu_relu",
    ]
    assert [r.ops_after.get("Relu", 0) for r in reports] == [1, 2, 3, 4]
    assert reports[1].op_changes() == {"Relu": 1}
    assert model.graph.output[0].name == "y_relu_relu_relu_relu"


def test_a_pipeline_copies_only_the_model_its_caller_still_holds():
    first, second, third = AddRelu(), AddRelu(), AddRelu()
    result = unchanged_by(Pipeline([first, Pipeline([second]), third]), graph("linear"))
    # The first pass copies the caller's model; the copy is the pipeline's own, rewritten after.
    assert (first.copied, second.copied, third.copied) == ([True], [False], [False])
    assert result.model.graph.output[0].name == "y_relu_relu_relu"
    given_up, owner = graph("linear"), AddRelu()
    model, _ = Pipeline([owner, RenameGraph()]).run(given_up, owned=True)
    assert model is given_up and owner.copied == [False] and model.graph.name == "renamed"
    assert model.graph.output[0].name == "y_relu"


def test_an_in_place_pass_first_leaves_the_caller_owning_the_model():
    """After an in-place pass the model is still the caller's: the next pass must copy it."""
    after = AddRelu()
    model = graph("linear")
    Pipeline([RenameGraph(), after]).run(model)
    assert after.copied == [True] and model.graph.output[0].name == "y"


def test_a_pipeline_is_a_pass_whose_details_carry_the_steps():
    model = graph("linear")
    result = unchanged_by(Pipeline([AddRelu(), Pipeline([AddRelu()])], name="both"), model)
    assert result.modified
    assert [s.name for s in result.details["steps"]] == ["add-relu", "add-relu"]
    assert [n.op_type for n in result.model.graph.node] == ["MatMul", "Add", "Relu", "Relu"]


def test_a_pipeline_declares_what_its_passes_do():
    functional, in_place = AddRelu(), RenameGraph()
    assert (Pipeline([functional, in_place]).in_place, Pipeline([functional, in_place]).changes_input) == (
        False,
        False,
    )
    assert (Pipeline([in_place, functional]).in_place, Pipeline([in_place, functional]).changes_input) == (
        False,
        True,
    )
    assert Pipeline([in_place, Pipeline([in_place])]).in_place
    model = graph("linear")
    assert Pipeline([in_place, in_place])(model).model is model
    assert Pipeline([]).in_place and not Pipeline([]).changes_input


def test_the_registry_names_each_rewrite_pass_by_its_own_name():
    from onnxopt.errors import OnnxoptError
    from onnxopt.passes.registry import RULES, check_skip, without

    assert all(name == rule.name for name, rule in RULES.items())
    assert {"fuse", "fuse-decoder-attention", "fold-weight-transposes", "cpu-int8-layout"} <= set(RULES)
    assert [p.name for p in without([AddRelu(), RenameGraph()], ("rename",))] == ["add-relu"]
    check_skip(("fuse",))
    with pytest.raises(OnnxoptError, match="no rule: fusee") as raised:
        check_skip(("fusee",), among=("fuse",))
    assert raised.value.hint == "the rules are fuse"
