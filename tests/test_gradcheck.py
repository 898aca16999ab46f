"""The finite-difference checker itself: exact on known derivatives, strict about its inputs."""

from __future__ import annotations

import numpy as np
import pytest

import npgru


def test_rel_error_formula():
    assert npgru.rel_error(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0
    assert npgru.rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    # below the floor both are "zero": the difference is measured against 1e-12
    assert npgru.rel_error(np.array([1e-14]), np.array([0.0])) == pytest.approx(0.01)


@pytest.mark.parametrize("order,eps", [(2, 1e-6), (4, 1e-3)])
def test_numeric_gradient_of_a_known_function(order, eps):
    x = np.array([0.3, -1.2, 2.0])
    g = npgru.numeric_gradient(lambda: float(np.sum(np.sin(x) * x)), x, eps=eps, order=order)
    np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x), rtol=1e-8)
    np.testing.assert_array_equal(x, [0.3, -1.2, 2.0])  # restored


def test_gradcheck_reports_per_name_and_samples():
    a, b = np.linspace(-1, 1, 50), np.array([2.0])

    def f():
        return float(np.sum(a**3) * b[0])

    errors = npgru.gradcheck(f, {"a": a, "b": b}, {"a": 3 * a**2 * b[0], "b": [np.sum(a**3)]},
                             max_checks=10)
    assert set(errors) == {"a", "b"} and max(errors.values()) < 1e-9


def test_gradcheck_refuses_float32_and_mismatches():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        npgru.gradcheck(lambda: float(x.sum()), {"x": x}, {"x": np.ones(3)})
    y = np.ones(3)
    with pytest.raises(ValueError, match="shape"):
        npgru.gradcheck(lambda: float(y.sum()), {"y": y}, {"y": np.ones(4)})
    with pytest.raises(ValueError, match="missing"):
        npgru.gradcheck(lambda: float(y.sum()), {"y": y}, {})
    with pytest.raises(ValueError, match="order"):
        npgru.numeric_gradient(lambda: 0.0, y, order=3)
