"""The parity check's greedy batch: the prompts cut to one length (no padding on either side) and
each row compared up to PyTorch's end of sequence."""

import numpy as np

from onnxopt.export.torch_check import same_length, until_end


def test_prompts_are_cut_to_the_shortest_and_batched():
    prompts = [np.array([[1, 2, 3, 4]]), np.array([[5, 6]]), np.array([[7, 8, 9]])]
    np.testing.assert_array_equal(same_length(prompts), [[1, 2], [5, 6], [7, 8]])


def test_a_row_ends_at_its_first_end_of_sequence_token_kept():
    row = np.array([4, 9, 2, 0, 0])
    np.testing.assert_array_equal(until_end(row, 2), [4, 9, 2])
    np.testing.assert_array_equal(until_end(row, [7, 9]), [4, 9])
    np.testing.assert_array_equal(until_end(row, None), row)
