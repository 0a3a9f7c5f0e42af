"""The one cosine: the same figures the five hand-written copies gave, and its zero cases."""

import numpy as np

from onnxopt.runtime.similarity import cosine, row_cosines


def test_cosine_is_the_expression_it_replaced_bit_for_bit():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a, b = rng.standard_normal((2, 3, 50)).astype(dtype)
        flat_a, flat_b = a.ravel(), b.ravel()
        old = float(flat_a @ flat_b / max(np.linalg.norm(flat_a) * np.linalg.norm(flat_b), 1e-30))
        assert cosine(a, b) == old


def test_an_all_zero_side_gives_cosine_zero_not_a_division_by_zero():
    assert cosine(np.zeros(4), np.ones(4)) == 0.0


def test_row_cosines_count_a_zero_row_as_agreeing():
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [3.0, 4.0], [-1.0, -1.0]])
    np.testing.assert_allclose(row_cosines(a, b), [1.0, 1.0, -1.0])
