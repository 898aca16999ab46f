"""Properties over random shapes (hypothesis): shapes, batch independence, backends agree."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import npgru

shapes = st.fixed_dictionaries({
    "T": st.integers(1, 6), "B": st.integers(1, 4), "D": st.integers(1, 5),
    "H": st.integers(1, 6), "L": st.integers(1, 3), "bidir": st.booleans(),
    "bf": st.booleans(), "variant": st.sampled_from(["torch", "classic"]),
    "bias": st.booleans(), "seed": st.integers(0, 2**16),
})


def _make(s):
    gru = npgru.GRU(s["D"], s["H"], s["L"], bias=s["bias"], batch_first=s["bf"],
                    bidirectional=s["bidir"], variant=s["variant"], dtype=np.float64,
                    seed=s["seed"])
    rng = np.random.default_rng(s["seed"])
    shape = (s["B"], s["T"], s["D"]) if s["bf"] else (s["T"], s["B"], s["D"])
    lengths = rng.integers(1, s["T"] + 1, size=s["B"])
    return gru, rng.standard_normal(shape), lengths


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_shapes_and_finiteness(s):
    gru, x, lengths = _make(s)
    dirs = gru.num_directions
    out, h_n = gru.forward(x, lengths=lengths)
    assert out.shape == x.shape[:2] + (dirs * s["H"],)
    assert h_n.shape == (s["L"] * dirs, s["B"], s["H"])
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1)
    dx, dh0 = gru.backward(np.ones_like(out), np.ones_like(h_n))
    assert dx.shape == x.shape and dh0 is None
    assert np.all(np.isfinite(gru.flat_grads))


@settings(max_examples=30, deadline=None)
@given(shapes)
def test_each_sequence_is_independent_of_the_rest_of_the_batch(s):
    gru, x, lengths = _make(s)
    out, h_n = gru.forward(x, lengths=lengths)
    b = s["B"] - 1
    xb = x[b : b + 1] if s["bf"] else x[:, b : b + 1]
    ob, hb = gru.forward(xb, lengths=lengths[b : b + 1])
    np.testing.assert_allclose(ob, out[b : b + 1] if s["bf"] else out[:, b : b + 1],
                               rtol=0, atol=1e-13)
    np.testing.assert_allclose(hb, h_n[:, b : b + 1], rtol=0, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(shapes)
def test_backends_agree(s):
    if not npgru._backend.numba_available():
        return
    gru, x, lengths = _make(s)
    previous = npgru.get_backend()
    results = []
    try:
        for name in ("numpy", "numba"):
            npgru.set_backend(name)
            out, h_n = gru.forward(x, lengths=lengths)
            dx, _ = gru.backward(np.cos(out), np.sin(h_n))
            results.append((out, h_n, dx, gru.flat_grads.copy()))
    finally:
        npgru.set_backend(previous)
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
