import numpy as np
import onnx

from onnxopt.data.samples import padded_batches
from onnxopt.runtime.sessions import probe_session


def _feed(n: int, with_mask: bool = True) -> dict:
    feed = {"input_ids": np.arange(1, n + 1, dtype=np.int64)[None], "position_ids": np.arange(n)[None]}
    if with_mask:
        feed["attention_mask"] = np.ones((1, n), dtype=np.int64)
    return feed


def test_padded_batches_group_by_length_and_mask_the_padding():
    batches = list(padded_batches([_feed(3), _feed(1), _feed(5), _feed(2)], size=2))
    assert [b["input_ids"].shape for b, _ in batches] == [(2, 2), (2, 5)]
    first, real = batches[0]
    np.testing.assert_array_equal(first["input_ids"], [[1, 0], [1, 2]])
    np.testing.assert_array_equal(first["attention_mask"], [[1, 0], [1, 1]])
    np.testing.assert_array_equal(first["position_ids"], [[0, 1], [0, 1]])  # padding continues positions
    np.testing.assert_array_equal(real, [True, False, True, True])
    assert sum(int(r.sum()) for _, r in batches) == 3 + 1 + 5 + 2  # every real token, once


def test_feeds_without_attention_mask_stay_one_per_batch():
    batches = list(padded_batches([_feed(3, False), _feed(1, False)], size=8))
    assert [b["input_ids"].shape for b, _ in batches] == [(1, 3), (1, 1)]
    assert all(r.all() for _, r in batches)


def test_probe_with_only_drops_the_layers_above(graph_file):
    model = onnx.load(str(graph_file("mlp")))
    first = model.graph.node[0].output[0]
    session = probe_session(model, [first], only=True)
    assert [o.name for o in session.get_outputs()] == [first]
    full = probe_session(model, [first])
    assert len(full.get_outputs()) == len(model.graph.output) + 1
