"""The paths chosen for speed by shape compute what the reference paths compute.

Streaming cells above the compiled kernels' size run through BLAS in transposed space
(``W · xᵀ``); here they must give :meth:`GRU.forward`'s states on both backends and variants.
"""

from __future__ import annotations

import numpy as np
import pytest

import npgru


@pytest.mark.parametrize("variant", ["torch", "classic"])
@pytest.mark.parametrize("B,D,H,L", [(32, 8, 96, 2), (7, 40, 80, 1)])
def test_blas_streaming_step_matches_forward(backend, variant, B, D, H, L):
    gru = npgru.GRU(D, H, L, variant=variant, dtype=np.float64, seed=3)
    x = np.random.default_rng(4).standard_normal((5, B, D))
    out, h_n = gru.forward(x)
    h = np.zeros((L, B, H))
    for t in range(x.shape[0]):
        h = gru.step(x[t], h)
        np.testing.assert_allclose(h[-1], out[t], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, h_n, rtol=1e-12, atol=1e-12)
