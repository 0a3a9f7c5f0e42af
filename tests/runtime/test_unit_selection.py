import numpy as np

from onnxopt.prune.unit_selection import allocate, kept_units, removal_curve


def test_curve_removes_cheapest_first_in_whole_steps_down_to_the_floor():
    scores = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 6.0])
    curve = removal_curve(scores, step=2, keep=3, params_per_unit=10)
    assert curve.steps == 1  # 6 - 3 = 3 may go, one whole step of 2
    np.testing.assert_array_equal(curve.order, [1, 3])
    np.testing.assert_allclose(curve.cost, [0.0, 3.0])
    np.testing.assert_array_equal(kept_units(curve, 1), [0, 2, 4, 5])
    np.testing.assert_array_equal(kept_units(curve, 0), np.arange(6))


def test_budget_goes_to_the_layer_whose_units_cost_least_per_parameter():
    cheap = removal_curve(np.array([1.0, 1.0, 1.0, 1.0]), step=1, keep=1, params_per_unit=10)
    dear = removal_curve(np.array([9.0, 9.0, 9.0, 9.0]), step=1, keep=1, params_per_unit=10)
    # Half of 80 parameters: 4 units. The cheap layer gives its 3 above the floor first.
    assert allocate([cheap, dear], 0.5) == [3, 1]
    assert allocate([cheap, dear], 0.0) == [0, 0]
    assert allocate([cheap, dear], 0.99) == [3, 3]  # floors hold whatever the budget
    assert allocate([], 0.5) == []
