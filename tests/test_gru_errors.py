"""Bad input gets a precise error naming the argument, what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

import npgru

T, B, D, H = 4, 3, 5, 6


@pytest.fixture
def gru():
    return npgru.GRU(D, H, num_layers=2, bidirectional=True, seed=0)


def x_ok():
    return np.zeros((T, B, D), dtype=np.float32)


@pytest.mark.parametrize(
    "x,err,match",
    [
        (np.zeros((T, D)), ValueError, "x must be 3-D"),
        (np.zeros((T, B, D + 1)), ValueError, "input_size=5"),
        (np.zeros((0, B, D)), ValueError, "at least one step"),
        (np.zeros((T, B, D), dtype=complex), TypeError, "real numeric"),
        (np.array([[["a"] * D] * B] * T), TypeError, "real numeric"),
        (np.full((T, B, D), np.nan), ValueError, "x contains NaN or Inf"),
        (np.full((T, B, D), np.inf), ValueError, "x contains NaN or Inf"),
        (None, TypeError, "x must be an array"),
    ],
    ids=["2d", "last-dim", "empty", "complex", "str", "nan", "inf", "none"],
)
def test_bad_x(gru, x, err, match):
    with pytest.raises(err, match=match):
        gru.forward(x)


def test_object_dtype_is_refused(gru):
    x = np.empty((T, B, D), dtype=object)
    x[...] = 1.0
    with pytest.raises(TypeError, match="got dtype object"):
        gru.forward(x)


@pytest.mark.parametrize(
    "h0,err,match",
    [
        (np.zeros((2, B, H)), ValueError, r"h0 must have shape \(4, 3, 6\), got \(2, 3, 6\)"),
        (np.zeros((4, B, H + 1)), ValueError, r"h0 must have shape"),
        (np.zeros((B, H)), ValueError, "h0 must be 3-D"),
        (np.full((4, B, H), np.nan), ValueError, "h0 contains NaN or Inf"),
        (np.zeros((4, B, H), dtype=complex), TypeError, "h0 must be a real numeric array"),
    ],
)
def test_bad_h0(gru, h0, err, match):
    with pytest.raises(err, match=match):
        gru.forward(x_ok(), h0)


@pytest.mark.parametrize(
    "lengths,err,match",
    [
        (np.array([1.0, 2.0, 3.0]), TypeError, "lengths must be integers"),
        (np.array([1, 2]), ValueError, r"lengths must have shape \(3,\)"),
        (np.array([[1, 2, 3]]), ValueError, r"lengths must have shape \(3,\)"),
        (np.array([0, 2, 3]), ValueError, r"lengths must lie in \[1, 4\]"),
        (np.array([1, 5, 3]), ValueError, r"lengths must lie in \[1, 4\]"),
        (np.array([1, -2, 3]), ValueError, r"lengths must lie in \[1, 4\]"),
        (["a", "b", "c"], TypeError, "lengths must be integers"),
    ],
)
def test_bad_lengths(gru, lengths, err, match):
    with pytest.raises(err, match=match):
        gru.forward(x_ok(), lengths=lengths)


def test_lengths_as_a_list_of_ints_is_fine(gru):
    out, _ = gru.forward(x_ok(), lengths=[4, 2, 1])
    assert out.shape == (T, B, 2 * H)


def test_backward_before_forward_and_twice():
    gru = npgru.GRU(D, H)
    with pytest.raises(npgru.StateError, match="backward needs a preceding forward"):
        gru.backward(np.zeros((T, B, H)))
    out, _ = gru.forward(x_ok())
    gru.backward(np.ones_like(out))
    with pytest.raises(ValueError, match="backward needs a preceding forward"):
        gru.backward(np.ones_like(out))


@pytest.mark.parametrize(
    "dout,dh_n,err,match",
    [
        (np.zeros((T, B, H)), None, ValueError, r"dout must have shape \(4, 3, 12\)"),
        (np.zeros((T, B, 2 * H)), np.zeros((2, B, H)), ValueError, r"dh_n must have shape \(4, 3, 6\)"),
        (np.full((T, B, 2 * H), np.nan), None, ValueError, "dout contains NaN or Inf"),
        (np.zeros((T, B, 2 * H), dtype=complex), None, TypeError, "dout must be a real"),
    ],
)
def test_bad_gradients(gru, dout, dh_n, err, match):
    gru.forward(x_ok())
    with pytest.raises(err, match=match):
        gru.backward(dout, dh_n)
    gru.backward(np.zeros((T, B, 2 * H)))  # a refused call leaves the cache usable


def test_bad_state_dicts(gru):
    good = gru.state_dict()
    before = gru.flat_params.copy()
    missing = dict(good)
    del missing["bias_hh_l1"]
    with pytest.raises(ValueError, match=r"missing keys \['bias_hh_l1'\]"):
        gru.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        gru.load_state_dict({**good, "extra": np.zeros(1)})
    bad = {**good, "weight_hh_l0": np.zeros((3 * H, H + 1))}
    with pytest.raises(ValueError, match=r"state\['weight_hh_l0'\] has shape \(18, 7\), expected \(18, 6\)"):
        gru.load_state_dict(bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        gru.load_state_dict({**good, "bias_ih_l0": np.full(3 * H, np.nan)})
    with pytest.raises(TypeError, match="real numeric"):
        gru.load_state_dict({**good, "bias_ih_l0": np.zeros(3 * H, dtype=complex)})
    with pytest.raises(TypeError, match="mapping"):
        gru.load_state_dict([("weight_ih_l0", good["weight_ih_l0"])])
    np.testing.assert_array_equal(gru.flat_params, before)  # nothing half-written


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(input_size=0, hidden_size=4), ValueError, "input_size must be a positive integer"),
        (dict(input_size=3.5, hidden_size=4), TypeError, "input_size must be a positive integer"),
        (dict(input_size=3, hidden_size=True), TypeError, "hidden_size"),
        (dict(input_size=3, hidden_size=4, num_layers=0), ValueError, "num_layers"),
        (dict(input_size=3, hidden_size=4, variant="keras"), ValueError, "variant must be one of"),
        (dict(input_size=3, hidden_size=4, dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\)"),
        (dict(input_size=3, hidden_size=4, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
        (dict(input_size=3, hidden_size=4, dtype=np.float16), TypeError, "dtype must be float32 or float64"),
    ],
)
def test_bad_constructor_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        npgru.GRU(**kwargs)
