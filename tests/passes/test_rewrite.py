"""The rewrite-rule driver: candidates by anchor op, checked and rewritten one by one in graph
order, node-list edits applied at the end, reasons kept per candidate."""

from onnx import helper

from onnxopt.passes.rewrite import RewriteRule, apply_rule
from tests.passes.util import graph, nodes


class ReluAfterAdd(RewriteRule):
    """Toy rule: an Add that no Relu reads yet gets one; the Relu takes the Add's place in order."""

    name = "toy"
    counts_as = "toys"
    anchor = ("Add",)

    def __init__(self):
        self.finished = None

    def check(self, index, node):
        users = index.consumers.get(node.output[0], [])
        return "a Relu reads it already" if any(u.op_type == "Relu" for u in users) else None

    def rewrite(self, index, node, edits):
        relu = helper.make_node("Relu", [f"{node.output[0]}_pre"], [node.output[0]], name=f"{node.name}_relu")
        node.output[0] = f"{node.output[0]}_pre"  # input/output changes happen at once
        edits.replace(node, [node, relu])

    def finish(self, index, edits):
        self.finished = len(edits.swaps)


def test_candidates_are_checked_in_order_and_edits_apply_at_the_end():
    model = graph("mlp")  # MatMul, Add, Relu, MatMul, Add: the first Add has a Relu, the last not
    rule = ReluAfterAdd()
    result = apply_rule(rule, model)
    assert result.rewritten == 1 and rule.finished == 1
    assert result.skipped == {"hb": "toy: a Relu reads it already"}  # unnamed: named by its output
    assert [n[1] for n in nodes(model)] == ["MatMul", "Add", "Relu", "MatMul", "Add", "Relu"]
    assert nodes(model)[-2:] == [("", "Add", ["o", "b2"], ["y_pre"]), ("_relu", "Relu", ["y_pre"], ["y"])]
