"""Linear, Embedding, Dropout: gradients against finite differences, semantics, errors."""

from __future__ import annotations

import numpy as np
import pytest

import npgru
from npgru.layers import dropout_backward, dropout_forward

from .torch_reference import require_torch


def _check_layer(layer, x, with_input=True):
    """Gradcheck ``Σ layer(x) ⊙ R`` with respect to every parameter (and ``x``)."""
    rng = np.random.default_rng(1)
    out = layer.forward(x)
    R = rng.standard_normal(out.shape)
    dx = layer.backward(R)
    inputs, analytic = dict(layer.params), {k: g.copy() for k, g in layer.grads.items()}
    if with_input:
        inputs["x"], analytic["x"] = x, dx
    errors = npgru.gradcheck(lambda: float(np.sum(layer.forward(x) * R)), inputs, analytic)
    assert max(errors.values()) < 1e-8, errors


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 3)], ids=["last-state", "every-step"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(shape, bias, rng):
    layer = npgru.Linear(3, 2, bias=bias, dtype=np.float64, seed=0)
    _check_layer(layer, rng.standard_normal(shape))


def test_linear_matches_torch_layout_and_init_range(rng):
    torch = require_torch()
    layer = npgru.Linear(16, 3, dtype=np.float64, seed=0)
    assert {k: v.shape for k, v in layer.params.items()} == {"weight": (3, 16), "bias": (3,)}
    assert np.abs(layer.flat_params).max() <= 1 / 4  # U(−1/√in, 1/√in)
    ref = torch.nn.Linear(16, 3, dtype=torch.float64)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = rng.standard_normal((2, 5, 16))
    np.testing.assert_allclose(layer.forward(x), ref(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-13, atol=1e-13)


def test_embedding_gradcheck_with_repeated_ids():
    layer = npgru.Embedding(5, 3, dtype=np.float64, seed=0)
    ids = np.array([[0, 2, 2], [4, 2, 0]])  # id 2 three times, id 0 twice, 1 and 3 never
    _check_layer(layer, ids, with_input=False)


def test_embedding_gradient_sums_repeated_rows():
    layer = npgru.Embedding(4, 2, dtype=np.float64, seed=0)
    ids = np.array([1, 1, 1, 3])
    layer.forward(ids)
    layer.backward(np.ones((4, 2)))
    np.testing.assert_array_equal(layer.grads["weight"], [[0, 0], [3, 3], [0, 0], [1, 1]])


@pytest.mark.parametrize("ids,err", [
    (np.array([0, 5]), ValueError), (np.array([-1]), ValueError), (np.array([0.0]), TypeError)])
def test_embedding_refuses_bad_ids(ids, err):
    with pytest.raises(err, match="ids"):
        npgru.Embedding(5, 2).forward(ids)


def test_dropout_gradcheck_with_a_fixed_mask(rng):
    x = rng.standard_normal((3, 4))
    R = rng.standard_normal((3, 4))
    _, mask = dropout_forward(x, 0.3, np.random.default_rng(7))
    errors = npgru.gradcheck(
        lambda: float(np.sum(dropout_forward(x, 0.3, np.random.default_rng(7))[0] * R)),
        {"x": x}, {"x": dropout_backward(R, mask)})
    assert errors["x"] < 1e-9


def test_dropout_is_seeded_scaled_and_off_in_eval(rng):
    x = np.ones((200, 50))
    a, b = npgru.Dropout(0.25, seed=3), npgru.Dropout(0.25, seed=3)
    ya, yb = a.forward(x), b.forward(x)
    np.testing.assert_array_equal(ya, yb)
    assert set(np.unique(ya)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((ya == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(a.backward(x), ya)  # the same mask scales the gradient
    a.eval()
    np.testing.assert_array_equal(a.forward(x), x)
    np.testing.assert_array_equal(a.backward(x), x)
    assert a.num_params == 0


@pytest.mark.parametrize("p,error", [(-0.1, ValueError), (1.0, ValueError), (float("nan"), ValueError),
                                     ("0.5", TypeError), (True, TypeError)])
def test_dropout_refuses_bad_p(p, error):
    with pytest.raises(error, match="p must be"):
        npgru.Dropout(p)


@pytest.mark.parametrize("layer,x", [
    (npgru.Linear(3, 2), np.ones((1, 3))),
    (npgru.Embedding(3, 2), np.array([1])),
    (npgru.Dropout(0.5), np.ones(3)),
], ids=["linear", "embedding", "dropout"])
def test_backward_needs_a_forward_each_time(layer, x):
    with pytest.raises(npgru.StateError, match="preceding forward"):
        layer.backward(np.ones(1))
    out = layer.forward(x)
    layer.backward(np.ones_like(out))
    with pytest.raises(npgru.StateError):
        layer.backward(np.ones_like(out))


def test_linear_refuses_wrong_width_and_nan():
    layer = npgru.Linear(3, 2)
    with pytest.raises(ValueError, match="in_features=3"):
        layer.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        layer.forward(np.array([[1.0, np.nan, 0.0]]))
