"""The LSTM layer: float64 gradients against finite differences, parity with torch.nn.LSTM
(packed bidirectional included), both backends, streaming (its cell's reference step is
checked with the GRU's in test_cell.py)."""

from __future__ import annotations

import numpy as np
import pytest

import npgru

from . import test_gru, test_gru_torch
from .conftest import require
from .test_gru_torch import _rel

T, B, D, H = 4, 3, 3, 4
LENGTHS = np.array([4, 1, 3])


# the GRU's gradcheck grid (layers × directions × layout × lengths × bias) for its one cell
GRID = [pytest.param(*p.values[1:], id=p.id.split("-", 1)[1]) for p in test_gru._grid()
        if p.values[0] == "torch"]


def _inputs(L, dirs, bf, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D) if bf else (T, B, D))
    return x, rng.standard_normal((L * dirs, B, H)), rng.standard_normal((L * dirs, B, H))


@pytest.mark.parametrize("L,bidir,bf,use_len,bias", GRID)
def test_gradcheck_every_parameter_x_h0_and_c0(backend, L, bidir, bf, use_len, bias):
    lstm = npgru.LSTM(D, H, L, bias=bias, batch_first=bf, bidirectional=bidir,
                      dtype=np.float64, seed=7)
    x, h0, c0 = _inputs(L, lstm.num_directions, bf)
    lengths = LENGTHS if use_len else None
    rng = np.random.default_rng(1)
    out, (h_n, c_n) = lstm.forward(x, (h0, c0), lengths)
    R, S, U = (rng.standard_normal(a.shape) for a in (out, h_n, c_n))
    dx, (dh0, dc0) = lstm.backward(R, (S, U))

    def loss() -> float:
        o, (h, c) = lstm.forward(x, (h0, c0), lengths)
        return float(np.sum(o * R) + np.sum(h * S) + np.sum(c * U))

    analytic = {**{k: g.copy() for k, g in lstm.grads.items()}, "x": dx, "h0": dh0, "c0": dc0}
    errors = npgru.gradcheck(loss, {**lstm.params, "x": x, "h0": h0, "c0": c0}, analytic,
                             eps=1e-3, order=4)
    assert set(errors) == set(lstm.params) | {"x", "h0", "c0"}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-7, f"{worst}: relative error {errors[worst]:.2e}"


CASES = test_gru_torch.CASES  # the GRU's parity grid, packed bidirectional included


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("L,bidir,bf,use_len,bias", CASES)
def test_parity_with_torch(backend, dtype, L, bidir, bf, use_len, bias):
    torch = require("torch")
    tol = {np.float64: 1e-10, np.float32: 1e-5}[dtype]
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    T_, B_, D_, H_, lengths = 6, 4, 5, 3, np.array([6, 2, 5, 1])
    lstm = npgru.LSTM(D_, H_, L, bias=bias, batch_first=bf, bidirectional=bidir, dtype=dtype,
                      seed=3)
    ref = torch.nn.LSTM(D_, H_, L, bias=bias, batch_first=bf, bidirectional=bidir, dtype=tdtype)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lstm.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B_, T_, D_) if bf else (T_, B_, D_)).astype(dtype)
    h0, c0 = rng.standard_normal((2, L * lstm.num_directions, B_, H_)).astype(dtype)
    lengths = lengths if use_len else None

    out, (h_n, c_n) = lstm.forward(x, (h0, c0), lengths)
    dout, dh_n, dc_n = (rng.standard_normal(a.shape).astype(dtype) for a in (out, h_n, c_n))
    dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n))

    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if lengths is None:
        ot, (hnt, cnt) = ref(xt, (h0t, c0t))
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
        po, (hnt, cnt) = ref(packed, (h0t, c0t))
        ot, _ = torch.nn.utils.rnn.pad_packed_sequence(po, batch_first=bf, total_length=T_)
    ((ot * torch.tensor(dout)).sum() + (hnt * torch.tensor(dh_n)).sum()
     + (cnt * torch.tensor(dc_n)).sum()).backward()

    for mine, theirs in ((out, ot), (h_n, hnt), (c_n, cnt), (dx, xt.grad), (dh0, h0t.grad),
                         (dc0, c0t.grad)):
        assert _rel(mine, theirs) <= tol
    for name, p in ref.named_parameters():
        assert _rel(lstm.grads[name], p.grad) <= tol, name


def test_parameters_and_initialisation_are_torchs():
    torch = require("torch")
    ref = torch.nn.LSTM(5, 8, 2, bidirectional=True)
    lstm = npgru.LSTM(5, 8, 2, bidirectional=True, seed=0)
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == {
        k: v.shape for k, v in lstm.params.items()}
    assert list(ref.state_dict()) == list(lstm.params)
    k = 1 / np.sqrt(8)
    assert -k <= lstm.flat_params.min() and lstm.flat_params.max() <= k
    assert abs(lstm.flat_params.mean()) < 0.02 and abs(lstm.flat_params.std() - k / np.sqrt(3)) < 0.01


@pytest.mark.parametrize("shape", [(5, 3, 4, 6), (4, 40, 5, 48)], ids=["sequence-kernel", "blas-loop"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backends_agree(shape, dtype):
    require("numba")
    T_, B_, D_, H_ = shape
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T_, B_, D_)).astype(dtype)
    hx = tuple(rng.standard_normal((4, B_, H_)).astype(dtype) for _ in range(2))  # 2 layers × 2
    lengths = rng.integers(1, T_ + 1, B_)
    results = []
    previous = npgru.get_backend()
    try:
        for name in ("numpy", "numba"):
            npgru.set_backend(name)
            lstm = npgru.LSTM(D_, H_, 2, bidirectional=True, dtype=dtype, seed=5)
            out, (h_n, c_n) = lstm.forward(x, hx, lengths)
            dx, (dh0, dc0) = lstm.backward(np.cos(out), (np.sin(h_n), np.cos(c_n)))
            results.append([out, h_n, c_n, dx, dh0, dc0, lstm.flat_grads.copy()])
    finally:
        npgru.set_backend(previous)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)


@pytest.mark.parametrize("layers,bias,dtype", [(1, True, np.float64), (3, False, np.float64),
                                               (2, True, np.float32)])
def test_step_equals_forward(backend, layers, bias, dtype):
    lstm = npgru.LSTM(D, H, layers, bias=bias, dtype=dtype, seed=3).eval()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0, c0 = rng.standard_normal((2, layers, B, H)).astype(dtype)
    out, (h_n, c_n) = lstm.forward(x, (h0, c0))
    hx, tops = (h0.copy(), c0.copy()), []
    for t in range(T):
        hx = lstm.step(x[t], hx, out=hx if t % 2 else None)  # in place on odd steps
        tops.append(hx[0][-1].copy())
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(np.stack(tops), out, rtol=tol, atol=tol)
    np.testing.assert_allclose(hx[0], h_n, rtol=tol, atol=tol)
    np.testing.assert_allclose(hx[1], c_n, rtol=tol, atol=tol)


def test_step_on_both_cell_paths_and_bad_input(backend):
    for B_, H_ in ((2, 8), (64, 96)):  # compiled cell, BLAS cell
        lstm = npgru.LSTM(5, H_, 2, dtype=np.float64, seed=1)
        x = np.random.default_rng(0).standard_normal((3, B_, 5))
        out, (h_n, c_n) = lstm.forward(x)
        hx = None
        for t in range(3):
            hx = lstm.step(x[t], hx)
        np.testing.assert_allclose(hx[0], h_n, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(hx[1], c_n, rtol=1e-12, atol=1e-12)
    lstm = npgru.LSTM(3, 4, seed=0)
    c = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lstm.step(np.ones((2, 3), np.float32), (np.zeros_like(c), c + np.inf))
    with pytest.raises(ValueError, match="c must have shape"):
        lstm.step(np.ones((2, 3), np.float32), (np.zeros_like(c), np.zeros((1, 3, 4))))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        lstm.step(np.ones((2, 3), np.float32), c)


def test_forward_backward_contract():
    lstm = npgru.LSTM(D, H, 2, seed=0)
    x = np.ones((T, B, D), np.float32)
    out, (h_n, c_n) = lstm.forward(x)
    assert out.shape == (T, B, H) and h_n.shape == c_n.shape == (2, B, H)
    dx, dhx0 = lstm.backward(np.ones_like(out))
    assert dx.shape == x.shape and dhx0 is None  # no hx given: no gradient for it
    lstm.forward(x, (h_n, c_n))
    dx, (dh0, dc0) = lstm.backward(np.ones_like(out), (None, np.ones_like(c_n)))
    assert dh0.shape == dc0.shape == (2, B, H)
    assert set(lstm.grads) == set(lstm.state_dict())
    with pytest.raises(ValueError, match="c0 must have shape"):
        lstm.forward(x, (h_n, c_n[:1]))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        lstm.forward(x, h_n)
    with pytest.raises(npgru.StateError):
        lstm.backward(np.ones_like(out))
    assert npgru.LSTM(**lstm.config()).config() == lstm.config()
