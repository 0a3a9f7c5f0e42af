"""Passes run on a model their caller gives up (Pipeline.run(owned=True)) rewrite it instead of a
copy, and must write exactly what they write on a copy: the quantize chain of a decoder (fusion,
transposes, packing, shapes, smoothing, searched int4 blocks, int8 embeddings) both ways, on a tiny
Llama, gives the same bytes; shape inference on stubbed weights gives the same types."""

from __future__ import annotations

from functools import partial

import onnx

from onnxopt.data.samples import TokenizedSamples, input_types, load_tokenizer
from onnxopt.data.sources import embedded_samples
from onnxopt.graph_queries.weight_grids import weight_only_error
from onnxopt.io.rope import rope_tables
from onnxopt.passes import Pipeline
from onnxopt.passes import infer_shapes as infer_shapes_module
from onnxopt.passes.fold_weight_transposes import FoldWeightTransposes
from onnxopt.passes.fuse_decoder_attention import FuseDecoderAttention
from onnxopt.passes.infer_shapes import InferShapes
from onnxopt.passes.pack_projections import PackProjections
from onnxopt.passes.quantize_embeddings import QuantizeEmbeddings
from onnxopt.passes.quantize_weights import QuantizeWeights
from onnxopt.passes.smooth import Smooth
from onnxopt.quantize.calibrate import collect_channel_stats
from onnxopt.quantize.graph_steps import INT4_ALPHAS
from onnxopt.quantize.weight_only import mean_squares
from tests.passes.test_fuse_decoder_attention import exported


def _chain(folder, model):
    feeds = list(TokenizedSamples(embedded_samples(6), load_tokenizer(folder), input_types(model), 32))

    def stats(graph, tensors):
        return collect_channel_stats(graph, feeds, tensors)

    error = partial(weight_only_error, block=32, algo="offset")
    return [
        FuseDecoderAttention(rope_tables(folder)),
        FoldWeightTransposes(),
        PackProjections(),
        InferShapes(),
        Smooth(stats, alphas=INT4_ALPHAS, error=error),
        QuantizeWeights(4, 32, "offset", 4, importance=mean_squares(feeds)),
        QuantizeEmbeddings(),
    ]


def test_the_quantize_chain_writes_the_same_model_in_place_as_on_copies(tmp_path_factory):
    folder = exported(tmp_path_factory, "llama")
    given_up = onnx.load(str(folder / "model.onnx"))
    kept = onnx.load(str(folder / "model.onnx"))
    before = kept.SerializeToString()
    copied, reports = Pipeline(_chain(folder, kept)).run(kept)
    owned, _ = Pipeline(_chain(folder, given_up)).run(given_up, owned=True)
    assert kept.SerializeToString() == before  # the caller's model, untouched without owned
    changed = [r.name for r in reports if r.modified]  # the tiny Llama has no tied head to fold
    assert changed == [
        "fuse-decoder-attention",
        "pack-projections",
        "infer-shapes",
        "smooth",
        "quantize-int4-offset",
        "quantize-embeddings",
    ]
    assert owned.SerializeToString() == copied.SerializeToString()


def test_past_2_gb_shapes_are_inferred_on_weights_as_inputs_and_copied_back(tmp_path_factory, monkeypatch):
    folder = exported(tmp_path_factory, "llama")
    model = onnx.load(str(folder / "model.onnx"))
    whole = InferShapes()(model)
    monkeypatch.setattr(infer_shapes_module, "is_large", lambda _model: True)
    stubbed = InferShapes()(model)
    assert stubbed.details["weights"] == "typed inputs (weights on disk or past 2 GB)"
    assert [i.name for i in stubbed.model.graph.input] == [i.name for i in model.graph.input]
    assert stubbed.details["method"] == whole.details["method"] == "symbolic"
    assert stubbed.model.graph.value_info == whole.model.graph.value_info
    assert list(stubbed.model.graph.initializer) == list(model.graph.initializer)
    owned = InferShapes().call_owned(model)
    assert owned.model is model and model.graph.value_info == whole.model.graph.value_info
