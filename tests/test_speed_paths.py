"""The paths chosen for speed by shape compute what the reference paths compute.

Streaming cells above the compiled kernels' size run through BLAS in transposed space
(``W · xᵀ``); here they must give :meth:`GRU.forward`'s states on both backends and variants.
"""

from __future__ import annotations

import numpy as np
import pytest

import npgru

from .conftest import require


@pytest.mark.parametrize("variant", ["torch", "classic"])
@pytest.mark.parametrize("B,D,H,L", [(32, 8, 96, 2), (7, 40, 80, 1), (64, 8, 48, 2)])
def test_blas_streaming_step_matches_forward(backend, variant, B, D, H, L):
    gru = npgru.GRU(D, H, L, variant=variant, dtype=np.float64, seed=3)
    x = np.random.default_rng(4).standard_normal((5, B, D))
    out, h_n = gru.forward(x)
    h = np.zeros((L, B, H))
    for t in range(x.shape[0]):
        h = gru.step(x[t], h)
        np.testing.assert_allclose(h[-1], out[t], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, h_n, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("below", [True, False], ids=["transposed", "plain"])
def test_compiled_gates_of_the_blas_cell_match_the_numpy_twin(dtype, below):
    """On both sides of the batch at which the Numba BLAS cell changes its GEMMs' layout."""
    require("numba")
    from npgru import _numba_kernels as nk
    from npgru import kernels

    rng = np.random.default_rng(5)
    B, D, H = nk.BLAS_GATES_MIN_BATCH - int(below), 5, 9
    w_ih, w_hh = (rng.uniform(-0.5, 0.5, (3 * H, n)).astype(dtype) for n in (D, H))
    b_ih, b_hh = (rng.uniform(-0.5, 0.5, 3 * H).astype(dtype) for _ in range(2))
    x, h_prev = rng.standard_normal((B, D)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    expect, got = np.empty((B, H), dtype), np.empty((B, H), dtype)
    kernels.torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, expect, np.empty((4, B, 3 * H), dtype))
    nk.blas_torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, got, np.empty((4, B, 3 * H), dtype))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, expect, rtol=tol, atol=tol)


def test_numba_streams_large_gru_shapes_through_the_compiled_gates():
    require("numba")
    from npgru import _numba_kernels as nk

    previous = npgru.get_backend()
    npgru.set_backend("numba")
    try:
        gru = npgru.GRU(8, 96, 2, seed=0)
        gru.step(np.ones((32, 8), np.float32))
        assert gru._stream[3] is nk.BLAS_STREAMS["gru"]
    finally:
        npgru.set_backend(previous)
