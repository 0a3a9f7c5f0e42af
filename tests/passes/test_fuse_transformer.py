"""FuseTransformer: onnxruntime.transformers' fusions, in place, with the reason when it skips."""

import onnx

from onnxopt.passes import fuse_transformer
from onnxopt.passes.fuse_transformer import FuseTransformer
from tests.passes.util import graph


def _bert(folder):
    return onnx.load(str(folder / "model.onnx"))


def test_it_fuses_bert_in_place(tiny_bert_onnx):
    model = _bert(tiny_bert_onnx)
    assert FuseTransformer.in_place and FuseTransformer.changes_input
    result = FuseTransformer("bert")(model)
    assert result.model is model and result.modified
    assert result.details == {
        "family": "bert",
        "fused": {"Attention": 2, "SkipLayerNormalization": 4, "EmbedLayerNormalization": 1, "BiasGelu": 2},
    }
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Attention") == 2 and "Softmax" not in ops
    assert {o.domain for o in model.opset_import} >= {"", "com.microsoft"}


def test_held_embedding_tables_come_back_unchanged(tiny_bert_onnx, monkeypatch):
    plain = FuseTransformer("bert")(_bert(tiny_bert_onnx)).model
    monkeypatch.setattr(fuse_transformer, "_HOLD_BYTES", 1)  # hold every Gather table, however small
    held = FuseTransformer("bert")(_bert(tiny_bert_onnx)).model
    assert held.SerializeToString() == plain.SerializeToString()


def test_it_skips_a_graph_without_rules_or_already_fused_and_says_why(tiny_bert_onnx):
    model = graph("mlp")
    before = model.SerializeToString()
    result = FuseTransformer(None)(model)
    assert result.model is model and not result.modified and model.SerializeToString() == before
    assert result.details == {"skipped": {"graph": "no fusion rules for model type None"}}
    fused = FuseTransformer("bert")(_bert(tiny_bert_onnx)).model
    again = FuseTransformer("roberta")(fused)
    assert again.details == {"skipped": {"graph": "graph is already fused"}} and not again.modified
