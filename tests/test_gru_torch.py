"""variant="torch" equals torch.nn.GRU: outputs, states and every gradient, packed sequences too."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import npgru

from .conftest import require

T, B, D, H = 6, 4, 5, 3
LENGTHS = np.array([6, 2, 5, 1])
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def _rel(mine, theirs):
    """Worst |a − b| relative to max(|b|, 1) (values near zero are compared absolutely)."""
    theirs = theirs.detach().double().numpy()
    return float(np.max(np.abs(mine - theirs) / np.maximum(np.abs(theirs), 1.0)))


CASES = [
    pytest.param(L, bidir, bf, use_len, bias, id=f"L{L}-{'bi' if bidir else 'uni'}-"
                 f"{'bf' if bf else 'tm'}-{'packed' if use_len else 'full'}-{'b' if bias else 'nob'}")
    for L, bidir, bf, use_len, bias in itertools.product(
        (1, 2, 3), (False, True), (False, True), (False, True), (True, False))
    if not (L == 3 and not bias)
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("L,bidir,bf,use_len,bias", CASES)
def test_parity_with_torch(backend, dtype, L, bidir, bf, use_len, bias):
    torch = require("torch")
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    gru = npgru.GRU(D, H, L, bias=bias, batch_first=bf, bidirectional=bidir, dtype=dtype, seed=3)
    ref = torch.nn.GRU(D, H, L, bias=bias, batch_first=bf, bidirectional=bidir, dtype=tdtype)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    rng = np.random.default_rng(0)
    dirs = gru.num_directions
    x = rng.standard_normal((B, T, D) if bf else (T, B, D)).astype(dtype)
    h0 = rng.standard_normal((L * dirs, B, H)).astype(dtype)
    lengths = LENGTHS if use_len else None

    out, h_n = gru.forward(x, h0, lengths)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    dx, dh0 = gru.backward(dout, dh_n)

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    if lengths is None:
        ot, hnt = ref(xt, h0t)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
        po, hnt = ref(packed, h0t)
        ot, _ = torch.nn.utils.rnn.pad_packed_sequence(po, batch_first=bf, total_length=T)
    ((ot * torch.tensor(dout)).sum() + (hnt * torch.tensor(dh_n)).sum()).backward()

    tol = TOL[dtype]
    assert _rel(out, ot) <= tol
    assert _rel(h_n, hnt) <= tol
    assert _rel(dx, xt.grad) <= tol
    assert _rel(dh0, h0t.grad) <= tol
    for name, p in ref.named_parameters():
        assert _rel(gru.grads[name], p.grad) <= tol, name


def test_torch_state_dict_loads_and_predicts_identically():
    torch = require("torch")
    torch.manual_seed(0)
    ref = torch.nn.GRU(D, H, 2, bidirectional=True, dtype=torch.float64)
    gru = npgru.GRU(D, H, 2, bidirectional=True, dtype=np.float64)
    gru.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((T, B, D))
    out, h_n = gru.forward(x)
    ot, hnt = ref(torch.tensor(x))
    assert _rel(out, ot) <= 1e-12 and _rel(h_n, hnt) <= 1e-12


def test_initialisation_matches_torch_distribution():
    """Same bounds and a two-sample KS distance consistent with one distribution."""
    torch = require("torch")
    hidden = 128
    torch.manual_seed(0)
    theirs = np.sort(np.concatenate(
        [p.detach().numpy().ravel() for p in torch.nn.GRU(32, hidden).parameters()]))
    mine = np.sort(npgru.GRU(32, hidden, seed=0).flat_params)
    assert mine.size == theirs.size
    k = 1 / np.sqrt(hidden)
    assert -k <= mine.min() and mine.max() <= k and -k <= theirs.min() and theirs.max() <= k
    grid = np.linspace(-k, k, 201)
    cdf_a = np.searchsorted(mine, grid, side="right") / mine.size
    cdf_b = np.searchsorted(theirs, grid, side="right") / theirs.size
    n = mine.size
    assert np.max(np.abs(cdf_a - cdf_b)) < 1.63 * np.sqrt(2 / n)  # 1% critical value
