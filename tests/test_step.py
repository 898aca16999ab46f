"""``GRU.step``: streaming one step at a time equals ``forward``, allocates nothing, checks input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import npgru

TOL = {np.float64: 1e-12, np.float32: 1e-5}


def stream(gru, x, h0, mode):
    """Run ``step`` over time-major ``x``; return the top layer's states and the last ``h``."""
    h = None if h0 is None else h0.copy()
    tops = []
    for t in range(x.shape[0]):
        if mode == "new":
            h = gru.step(x[t], h)
        elif mode == "out":
            out = np.empty((gru.num_layers, x.shape[1], gru.hidden_size), gru.dtype)
            h = gru.step(x[t], h, out=out)
        else:  # in place
            if h is None:
                h = np.zeros((gru.num_layers, x.shape[1], gru.hidden_size), gru.dtype)
            gru.step(x[t], h, out=h)
        tops.append(h[-1].copy())
    return np.stack(tops), h


@pytest.mark.parametrize("variant", ["torch", "classic"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["new", "out", "inplace"])
def test_step_equals_forward(backend, variant, layers, bias, dtype, mode):
    T, B, D, H = 7, 3, 4, 6
    gru = npgru.GRU(D, H, layers, bias=bias, variant=variant, dtype=dtype, seed=3,
                    dropout=0.5 if layers > 1 else 0.0)
    gru.eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = rng.standard_normal((layers, B, H)).astype(dtype)
    out, h_n = gru.forward(x, h0)
    tops, h = stream(gru, x, h0, mode)
    tol = TOL[dtype]
    np.testing.assert_allclose(tops, out, rtol=tol, atol=tol)
    np.testing.assert_allclose(h, h_n, rtol=tol, atol=tol)
    assert h.dtype == dtype


@pytest.mark.parametrize("B,H", [(2, 8), (64, 256)], ids=["compiled-cell", "blas-cell"])
def test_step_equals_forward_on_both_cell_paths(backend, B, H):
    gru = npgru.GRU(5, H, 2, dtype=np.float64, seed=1)
    x = np.random.default_rng(1).standard_normal((3, B, 5))
    out, h_n = gru.forward(x)
    tops, h = stream(gru, x, None, "new")
    np.testing.assert_allclose(tops, out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, h_n, rtol=1e-12, atol=1e-12)


def traced_peaks(gru, x, h):
    """Peak bytes traced during a step with ``out=``, in place, and without ``out``."""
    out = np.empty_like(h)
    gru.step(x, h, out=out)  # first call: scratch buffers, weights, (compilation)
    tracemalloc.start()
    try:
        gru.step(x, h, out=out)
        gru.step(x, out, out=out)  # in place
        _, peak_out = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        gru.step(x, h)
        _, peak_new = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak_out, peak_new - base


def test_compiled_step_allocates_nothing(backend):
    """The compiled cell path allocates nothing at all with ``out=``, and only the result
    without it. (NumPy's ufuncs use small internal buffers on strided views: bounded, below.)"""
    B, D, H, L = 4, 8, 16, 2
    gru = npgru.GRU(D, H, L, seed=0)
    h = np.zeros((L, B, H), np.float32)
    peak_out, peak_new = traced_peaks(gru, np.ones((B, D), np.float32), h)
    if backend == "numba":
        assert peak_out < 2048, peak_out  # a few small Python objects (views), no arrays
        assert peak_new < h.nbytes + 2048, peak_new
    else:
        assert peak_out < 64 * 1024, peak_out


def test_step_memory_does_not_grow_with_the_state(backend):
    B, D, H = 1024, 8, 256  # a state of 1 MiB; BLAS cells on both backends
    gru = npgru.GRU(D, H, 1, seed=0)
    h = np.zeros((1, B, H), np.float32)
    peak_out, peak_new = traced_peaks(gru, np.ones((B, D), np.float32), h)
    assert peak_out < 192 * 1024, peak_out  # bounded ufunc buffers, no array of the state's size
    assert peak_new < h.nbytes + 192 * 1024, peak_new


def test_step_sees_new_weights_after_load_state_dict(backend):
    gru = npgru.GRU(3, 4, 2, seed=0)
    x = np.ones((1, 3), np.float32)
    first = gru.step(x)
    gru.load_state_dict({k: v * 0.5 for k, v in gru.state_dict().items()})
    second = gru.step(x)
    assert not np.allclose(first, second)
    gru.flat_params[:] = 0  # an optimizer updates the flat vector in place
    np.testing.assert_array_equal(gru.step(x), 0)


def test_step_follows_batch_size_changes(backend):
    gru = npgru.GRU(3, 4, seed=0)
    for B in (1, 5, 2):
        assert gru.step(np.ones((B, 3), np.float32)).shape == (1, B, 4)


def test_step_rejects_bidirectional():
    gru = npgru.GRU(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        gru.step(np.ones((1, 3), np.float32))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=np.ones((2, 4))), ValueError, r"x must have shape \(B, 3\)"),
    (dict(x=np.ones((2, 1, 3))), ValueError, "x must be 2-D"),
    (dict(x=np.ones((0, 3))), ValueError, "x must have shape"),
    (dict(x=np.ones((2, 3)) * np.nan), ValueError, "NaN or Inf"),
    (dict(x=np.array([[1, 2, np.inf]] * 2, np.float32)), ValueError, "NaN or Inf"),
    (dict(x=np.ones((2, 3), complex)), TypeError, "real numeric"),
    (dict(h=np.ones((1, 2, 4))), ValueError, "h must have shape"),
    (dict(h=np.full((2, 2, 4), np.inf)), ValueError, "NaN or Inf"),
    (dict(h=np.full((2, 2, 4), np.nan, np.float32)), ValueError, "NaN or Inf"),
    (dict(out=np.empty((2, 2, 4))), TypeError, "out must be"),
    (dict(out=np.empty((2, 3, 4), np.float32)), ValueError, "out must have shape"),
])
def test_step_rejects_bad_input(backend, kwargs, exc, match):
    gru = npgru.GRU(3, 4, 2, seed=0)
    args = dict(x=np.ones((2, 3), np.float32), h=np.zeros((2, 2, 4), np.float32), out=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        gru.step(args["x"], args["h"], out=args["out"])


def test_failed_step_leaves_out_untouched(backend):
    gru = npgru.GRU(3, 4, seed=0)
    h = np.full((1, 2, 4), 0.25, np.float32)
    with pytest.raises(ValueError):
        gru.step(np.array([[1.0, np.nan, 0.0], [0, 0, 0]], np.float32), h, out=h)
    np.testing.assert_array_equal(h, 0.25)
