"""Helpers for the pass tests: graphs under graphs/, node lists to compare, onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnxopt.io import text_graphs


def graph(name: str) -> onnx.ModelProto:
    return text_graphs.load(name)


def nodes(model: onnx.ModelProto) -> list[tuple[str, str, list[str], list[str]]]:
    """(name, op type, inputs, outputs) of every node, in order: what a rewrite is judged by."""
    return [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def feed_for(model: onnx.ModelProto, rows: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float inputs, `rows` rows of each input's last dimension."""
    rng = np.random.default_rng(seed)
    return {
        i.name: rng.normal(size=(rows, i.type.tensor_type.shape.dim[-1].dim_value)).astype(np.float32)
        for i in model.graph.input
    }


def unchanged_by(pass_, model: onnx.ModelProto):
    """Run `pass_` and check it left its input as it was (serialized before and after)."""
    before = model.SerializeToString()
    result = pass_(model)
    assert model.SerializeToString() == before, f"{pass_.name} changed its input"
    assert result.model is not model
    return result


def set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replace (or add) the initializer `name`."""
    tensor = onnx.numpy_helper.from_array(np.asarray(value), name)
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(tensor)
            return
    model.graph.initializer.append(tensor)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)
