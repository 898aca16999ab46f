"""The GRU layer: gradients against finite differences, the classic equations, the layout."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

import npgru
from npgru.gradcheck import gradcheck_gru

T, B, D, H = 4, 3, 3, 4
LENGTHS = np.array([4, 1, 3])


def _grid():
    """Both variants × layers {1,2,3} × uni/bi × batch_first × lengths × bias (representative)."""
    for variant, L, bidir, bf, use_len, bias in itertools.product(
        ("torch", "classic"), (1, 2, 3), (False, True), (False, True), (False, True), (True, False)
    ):
        # the full product at 1 and 2 layers; at 3 layers one setting of the layout flags
        if L == 3 and (bf or not bias):
            continue
        yield pytest.param(variant, L, bidir, bf, use_len, bias,
                           id=f"{variant}-L{L}-{'bi' if bidir else 'uni'}-{'bf' if bf else 'tm'}"
                              f"-{'len' if use_len else 'full'}-{'bias' if bias else 'nobias'}")


def _inputs(L, dirs, bf, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D) if bf else (T, B, D))
    return x, rng.standard_normal((L * dirs, B, H))


@pytest.mark.parametrize("variant,L,bidir,bf,use_len,bias", list(_grid()))
def test_gradcheck_every_parameter_x_and_h0(backend, variant, L, bidir, bf, use_len, bias):
    gru = npgru.GRU(D, H, L, bias=bias, batch_first=bf, bidirectional=bidir,
                    variant=variant, dtype=np.float64, seed=7)
    x, h0 = _inputs(L, gru.num_directions, bf)
    errors = gradcheck_gru(gru, x, h0, LENGTHS if use_len else None)
    assert set(errors) == set(gru.params) | {"x", "h0"}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-7, f"{worst}: relative error {errors[worst]:.2e}"


def test_gradcheck_detects_a_wrong_gradient():
    """The check can fail: a gradient that is off by a little is caught."""
    gru = npgru.GRU(D, H, dtype=np.float64, seed=0)
    x, h0 = _inputs(1, 1, False)
    out, h_n = gru.forward(x, h0)
    dx, _ = gru.backward(np.ones_like(out), None)
    wrong = dx.copy()
    wrong[1, 2, 0] *= 1.001
    errors = npgru.gradcheck(lambda: float(gru.forward(x, h0)[0].sum()), {"x": x}, {"x": wrong})
    assert errors["x"] > 1e-4


def test_dropout_backward_uses_the_forward_mask():
    gru = npgru.GRU(D, H, 3, dropout=0.4, dtype=np.float64, seed=3)
    x, h0 = _inputs(3, 1, False)
    rng_state = copy.deepcopy(gru._dropout_rng)

    def run():
        gru._dropout_rng = copy.deepcopy(rng_state)  # same masks on every forward
        return gru.forward(x, h0)

    out, h_n = run()
    R, S = np.random.default_rng(1).standard_normal(out.shape), np.ones(h_n.shape)
    dx, dh0 = gru.backward(R, S)
    analytic = {**{k: g.copy() for k, g in gru.grads.items()}, "x": dx, "h0": dh0}

    def loss():
        o, h = run()
        return float(np.sum(o * R) + np.sum(h * S))

    errors = npgru.gradcheck(loss, {**gru.params, "x": x, "h0": h0}, analytic)
    assert max(errors.values()) <= 1e-7


def test_dropout_only_in_training_mode_and_seeded():
    x, _ = _inputs(2, 1, False)
    a = npgru.GRU(D, H, 2, dropout=0.5, dtype=np.float64, seed=11)
    b = npgru.GRU(D, H, 2, dropout=0.5, dtype=np.float64, seed=11)
    plain = npgru.GRU(D, H, 2, dtype=np.float64, seed=11)
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])  # same seed, same masks
    assert not np.allclose(a.forward(x)[0], plain.forward(x)[0])
    a.eval()
    np.testing.assert_array_equal(a.forward(x)[0], plain.forward(x)[0])
    a.train()
    assert a.training and not np.allclose(a.forward(x)[0], plain.forward(x)[0])


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_classic_without_bias_is_the_four_equations():
    """variant="classic", bias=False against a literal transcription of the founding equations."""
    gru = npgru.GRU(D, H, variant="classic", bias=False, dtype=np.float64, seed=5)
    x, h0 = _inputs(1, 1, False, seed=2)
    W_r, W_z, W_h = np.split(gru.params["weight_ih_l0"], 3)
    U_r, U_z, U_h = np.split(gru.params["weight_hh_l0"], 3)
    h = h0[0]
    expected = []
    for t in range(T):
        z = _sigmoid(x[t] @ W_z.T + h @ U_z.T)
        r = _sigmoid(x[t] @ W_r.T + h @ U_r.T)
        h_tilde = np.tanh(x[t] @ W_h.T + (r * h) @ U_h.T)
        h = (1 - z) * h + z * h_tilde
        expected.append(h)
    out, h_n = gru.forward(x, h0)
    np.testing.assert_allclose(out, np.stack(expected), rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_n[0], h, rtol=0, atol=1e-14)


def test_classic_with_bias_adds_both_biases_inside_the_gates():
    gru = npgru.GRU(D, H, variant="classic", dtype=np.float64, seed=5)
    x, h0 = _inputs(1, 1, False, seed=2)
    W = np.split(gru.params["weight_ih_l0"], 3)
    U = np.split(gru.params["weight_hh_l0"], 3)
    b = np.split(gru.params["bias_ih_l0"], 3)
    c = np.split(gru.params["bias_hh_l0"], 3)
    h = h0[0]
    for t in range(T):
        r = _sigmoid(x[t] @ W[0].T + h @ U[0].T + b[0] + c[0])
        z = _sigmoid(x[t] @ W[1].T + h @ U[1].T + b[1] + c[1])
        n = np.tanh(x[t] @ W[2].T + (r * h) @ U[2].T + b[2] + c[2])
        h = (1 - z) * h + z * n
    np.testing.assert_allclose(gru.forward(x, h0)[1][0], h, rtol=0, atol=1e-14)


def test_variants_share_keys_and_shapes_but_differ():
    a = npgru.GRU(D, H, 2, bidirectional=True, dtype=np.float64, seed=1)
    b = npgru.GRU(D, H, 2, bidirectional=True, variant="classic", dtype=np.float64, seed=1)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()}
    x, _ = _inputs(2, 2, False)
    assert not np.allclose(a.forward(x)[0], b.forward(x)[0])


def test_state_dict_keys_shapes_and_order():
    gru = npgru.GRU(5, 7, num_layers=2, bidirectional=True)
    sd = gru.state_dict()
    assert list(sd) == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
        "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
        "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse",
    ]
    assert sd["weight_ih_l0"].shape == (21, 5)
    assert sd["weight_ih_l1"].shape == (21, 14)
    assert sd["weight_hh_l1_reverse"].shape == (21, 7)
    assert sd["bias_hh_l0"].shape == (21,)
    assert all(v.dtype == np.float32 for v in sd.values())
    assert "bias_ih_l0" not in npgru.GRU(5, 7, bias=False).state_dict()


def test_params_and_grads_are_views_into_one_vector():
    gru = npgru.GRU(D, H, 2, bidirectional=True, seed=0)
    assert gru.flat_params.size == sum(p.size for p in gru.params.values()) == gru.num_params
    for name, p in gru.params.items():
        assert np.shares_memory(p, gru.flat_params), name
        assert np.shares_memory(gru.grads[name], gru.flat_grads), name
    gru.flat_params[:] = 0.5
    assert all(np.all(p == 0.5) for p in gru.params.values())
    x, _ = _inputs(2, 2, False)
    out, _ = gru.forward(x)
    gru.backward(np.ones_like(out))
    assert np.linalg.norm(gru.flat_grads) > 0
    np.testing.assert_array_equal(
        np.concatenate([g.ravel() for g in gru.grads.values()]), gru.flat_grads)


def test_state_dict_is_a_copy_and_load_round_trips():
    a = npgru.GRU(D, H, 2, seed=1)
    b = npgru.GRU(D, H, 2, seed=2)
    sd = a.state_dict()
    sd["weight_ih_l0"][:] = 9
    assert not np.any(a.params["weight_ih_l0"] == 9)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    assert b.flat_params.dtype == np.float32


def test_initialisation_is_uniform_like_pytorch():
    hidden = 256
    gru = npgru.GRU(64, hidden, seed=0)
    k = 1 / np.sqrt(hidden)
    w = gru.flat_params.astype(np.float64)
    assert w.min() >= -k and w.max() <= k
    # Kolmogorov–Smirnov distance to U(-k, k)
    s = np.sort(w)
    cdf = (s + k) / (2 * k)
    n = s.size
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / np.sqrt(n)  # 1% critical value
    assert not np.array_equal(npgru.GRU(64, hidden, seed=1).flat_params, gru.flat_params)
    np.testing.assert_array_equal(npgru.GRU(64, hidden, seed=0).flat_params, gru.flat_params)


def test_lengths_stop_the_state_and_zero_the_padding():
    gru = npgru.GRU(D, H, 1, bidirectional=True, dtype=np.float64, seed=0)
    x, _ = _inputs(1, 2, False)
    out, h_n = gru.forward(x, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        assert np.all(out[n:, b] == 0)
        # each sequence alone, unpadded, gives the same outputs and final states
        o1, h1 = gru.forward(x[:n, b : b + 1])
        np.testing.assert_allclose(out[:n, b], o1[:, 0], rtol=0, atol=1e-15)
        np.testing.assert_allclose(h_n[:, b], h1[:, 0], rtol=0, atol=1e-15)


def test_full_lengths_equal_no_lengths():
    gru = npgru.GRU(D, H, 2, bidirectional=True, dtype=np.float64, seed=0)
    x, h0 = _inputs(2, 2, False)
    a = gru.forward(x, h0)
    b = gru.forward(x, h0, lengths=np.full(B, T))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_dh0_is_none_without_h0_and_float32_runs():
    gru = npgru.GRU(D, H, 2, seed=0)
    x, _ = _inputs(2, 1, False)
    out, h_n = gru.forward(x)
    assert out.dtype == h_n.dtype == np.float32
    dx, dh0 = gru.backward(np.ones_like(out))
    assert dh0 is None and dx.dtype == np.float32 and dx.shape == x.shape
