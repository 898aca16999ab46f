"""The Numba kernels against their NumPy twins, on the same inputs; dispatch; boundary checks.

Tolerances: float64 within 1e-12, float32 within 1e-5 (relative, with the same absolute floor).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npgru
from npgru import _backend, gru, recurrence
from npgru import kernels as NK
from npgru.lstm import LSTM_CELL

from .conftest import require

TOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = (np.float64, np.float32)


@pytest.fixture(scope="module")
def NB():
    require("numba")
    from npgru import _numba_kernels

    return _numba_kernels


def close(a, b, dtype, terms=1):
    """Within the dtype's tolerance, scaled by √terms for sums of that many products (rounding
    errors of a sum in a different order grow about so)."""
    tol = TOL[dtype] * np.sqrt(terms)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def step_inputs(rng, dtype, B=5, H=7, masked=True, bias=True):
    """Random pre-activations, states and gates in their ranges; a mask with zeros and ones."""
    gates = rng.uniform(0.05, 0.95, (B, 3 * H)).astype(dtype)
    gates[:, 2 * H :] = rng.uniform(-0.95, 0.95, (B, H))
    return dict(
        gi=rand(rng, (B, 3 * H), dtype, 2.0),
        gh=rand(rng, (B, 3 * H), dtype, 2.0),
        b_hh=rand(rng, (3 * H,), dtype) if bias else np.zeros(3 * H, dtype),
        h_prev=rand(rng, (B, H), dtype),
        m=(rng.random(B) < 0.6).astype(dtype) if masked else None,
        gates=gates,
        hn=rand(rng, (B, H), dtype),
        dmm=rand(rng, (B, H), dtype),
        ddir=rand(rng, (B, H), dtype),
        dout=rand(rng, (B, H), dtype),
        drh=rand(rng, (B, H), dtype),
    )


def both(fn_np, fn_nb, make_args, dtype):
    """Run both kernels on fresh copies of the same arguments; compare every array argument."""
    a_np, a_nb = make_args(), make_args()
    r_np, r_nb = fn_np(*a_np), fn_nb(*a_nb)
    for x, y in zip(a_np, a_nb, strict=True):
        if isinstance(x, np.ndarray):
            close(y, x, dtype)
    if r_np is not None:
        close(r_nb, r_np, dtype)


CASES = list(itertools.product(DTYPES, (False, True), (False, True)))  # dtype, masked, bias
CELL = {variant: cell.name for variant, cell in gru.CELLS.items()}  # kernel-table keys


# ---------------------------------------------------------------------------------------
# per-step kernels
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,masked,bias", CASES)
def test_step_kernels_match_twins(NB, dtype, masked, bias):
    rng = np.random.default_rng(0)
    v = step_inputs(rng, dtype, masked=masked, bias=bias)
    B, H = v["h_prev"].shape

    def c(name):
        return v[name].copy() if v[name] is not None else None

    def empty(*shape):
        return np.zeros(shape, dtype)

    both(NK.torch_step_forward, NB.torch_step_forward,
         lambda: (c("gi"), c("gh"), c("b_hh"), c("h_prev"), c("m"), empty(B, H),
                  empty(B, 3 * H), empty(B, H)), dtype)
    both(NK.torch_step_backward, NB.torch_step_backward,
         lambda: (c("dmm"), c("ddir"), c("dout"), c("gates"), c("hn"), c("h_prev"), c("m"),
                  empty(B, 3 * H), empty(B, 3 * H)), dtype)
    both(NK.classic_step_gates, NB.classic_step_gates,
         lambda: (c("gi"), c("gh")[:, : 2 * H].copy(), c("b_hh"), c("h_prev"), c("gates"),
                  empty(B, H)), dtype)
    both(NK.classic_step_forward, NB.classic_step_forward,
         lambda: (c("gi"), c("hn"), c("b_hh"), c("h_prev"), c("m"), empty(B, H), c("gates")),
         dtype)
    both(NK.classic_step_backward, NB.classic_step_backward,
         lambda: (c("dmm"), c("ddir"), c("dout"), c("gates"), c("h_prev"), c("m"),
                  empty(B, 3 * H)), dtype)
    both(NK.classic_step_backward_reset, NB.classic_step_backward_reset,
         lambda: (c("drh"), c("gates"), c("h_prev"), empty(B, 3 * H), c("ddir")), dtype)


def test_finished_sequences_keep_their_state(NB):
    rng = np.random.default_rng(1)
    v = step_inputs(rng, np.float64)
    m = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    h = np.empty_like(v["h_prev"])
    g = np.empty((5, 21))
    NB.torch_step_forward(v["gi"], v["gh"], v["b_hh"], v["h_prev"], m, h, g, np.empty_like(h))
    np.testing.assert_array_equal(h[m == 0], v["h_prev"][m == 0])


# ---------------------------------------------------------------------------------------
# whole-sequence kernels and cells
# ---------------------------------------------------------------------------------------
def seq_inputs(rng, dtype, T=6, B=4, H=5, masked=True, bias=True, G=3):
    mask = None
    if masked:
        lengths = np.array([T, 1, 3, T - 1][:B])
        mask = (np.arange(T)[:, None] < lengths[None, :]).astype(dtype)
    return dict(
        gi=rand(rng, (T, B, G * H), dtype),
        w_hh=rand(rng, (G * H, H), dtype, 0.5),
        b_hh=rand(rng, (G * H,), dtype) if bias else np.zeros(G * H, dtype),
        mask=mask,
        h0=rand(rng, (B, H), dtype),
        c0=rand(rng, (B, H), dtype),
        dout=rand(rng, (T, B, H), dtype),
        dh_n=rand(rng, (B, H), dtype),
        dc_n=rand(rng, (B, H), dtype),
    )


def run_sequence(table, cell, v, loop: bool):
    """One cell's forward and backward time loops on ``v`` through a backend's table (the
    whole-sequence kernels, or the loop drivers with ``loop``); every array they write."""
    T, B, GH = v["gi"].shape
    H, dt = GH // cell.gates, v["gi"].dtype
    arrays = []
    for s in cell.states:
        a = np.zeros((T + 1, B, H), dt)
        a[0] = v[f"{s}0"]
        arrays.append(a)
    arrays += [np.zeros((T, B, w * H), dt) for _, w in cell.saved]
    forward = table.forward_loop if loop else table.seq_forward
    forward(v["gi"], v["w_hh"], v["b_hh"], v["mask"], *arrays)
    dgi = np.zeros((T, B, GH), dt)
    dgh = np.zeros((T, B, cell.dgh_width * H), dt) if cell.dgh_width else None
    backward = table.backward_loop if loop else table.seq_backward
    d0 = backward(v["dout"], *[v[f"d{s}_n"] for s in cell.states], *arrays, v["mask"],
                  v["w_hh"], dgi, dgh)
    return [*arrays, dgi, *([] if dgh is None else [dgh]), *(d0 if isinstance(d0, tuple) else [d0])]


ALL_CELLS = {**gru.CELLS, "lstm": LSTM_CELL}


@pytest.mark.parametrize("variant", list(ALL_CELLS))
@pytest.mark.parametrize("dtype,masked,bias", CASES)
def test_sequence_kernels_match_twins(NB, variant, dtype, masked, bias):
    cell = ALL_CELLS[variant]
    v = seq_inputs(np.random.default_rng(2), dtype, masked=masked, bias=bias, G=cell.gates)
    results = [run_sequence(K.TABLES[cell.name], cell, v, loop=False) for K in (NK, NB)]
    for a, b in zip(*results, strict=True):
        close(b, a, dtype)


@pytest.mark.parametrize("variant", list(ALL_CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_loop_driver_with_compiled_steps_matches_twin(NB, variant, dtype):
    """The large-shape path: Python time loop, BLAS GEMMs, compiled step kernels."""
    cell = ALL_CELLS[variant]
    v = seq_inputs(np.random.default_rng(3), dtype, G=cell.gates)
    # NumPy's loop drivers with each backend's step kernels
    outs = [run_sequence(K.TABLES[cell.name], cell, v, loop=True) for K in (NK, NB)]
    for a, b in zip(*outs, strict=True):
        close(b, a, dtype)


@pytest.mark.parametrize("dtype,bias", [(d, b) for d in DTYPES for b in (False, True)])
def test_lstm_cells_match_twins(NB, dtype, bias):
    rng = np.random.default_rng(4)
    B, D, H = 3, 4, 6
    args = (rand(rng, (B, D), dtype), rand(rng, (B, H), dtype), rand(rng, (B, H), dtype),
            rand(rng, (4 * H, D), dtype), rand(rng, (4 * H, H), dtype),
            rand(rng, (4 * H,), dtype) if bias else np.zeros(4 * H, dtype),
            rand(rng, (4 * H,), dtype) if bias else np.zeros(4 * H, dtype))
    states = []
    for K in (NK, NB):
        h, c = np.zeros((B, H), dtype), np.zeros((B, H), dtype)
        K.lstm_cell(*args, h, c, np.zeros((4, B, 4 * H), dtype))
        states.append((h, c))
    for a, b in zip(*states, strict=True):
        close(b, a, dtype)


@pytest.mark.parametrize("variant", ["torch", "classic"])
@pytest.mark.parametrize("dtype,bias", [(d, b) for d in DTYPES for b in (False, True)])
def test_cells_match_twins(NB, variant, dtype, bias):
    rng = np.random.default_rng(4)
    B, D, H = 3, 4, 6
    args = (rand(rng, (B, D), dtype), rand(rng, (B, H), dtype), rand(rng, (3 * H, D), dtype),
            rand(rng, (3 * H, H), dtype),
            rand(rng, (3 * H,), dtype) if bias else np.zeros(3 * H, dtype),
            rand(rng, (3 * H,), dtype) if bias else np.zeros(3 * H, dtype))
    hs = []
    for K in (NK, NB):
        h = np.zeros((B, H), dtype)
        getattr(K, f"{variant}_cell")(*args, h, np.zeros((4, B, 3 * H), dtype))
        hs.append(h)
    close(hs[1], hs[0], dtype)


@pytest.mark.parametrize("variant", list(ALL_CELLS))
@pytest.mark.parametrize("dtype,bias", [(d, b) for d in DTYPES for b in (False, True)])
def test_stream_step_matches_twin(NB, variant, dtype, bias):
    if variant == "lstm":
        layer = npgru.LSTM(4, 6, 3, bias=bias, dtype=dtype, seed=5)
    else:
        layer = npgru.GRU(4, 6, 3, bias=bias, variant=variant, dtype=dtype, seed=5)
    rng = np.random.default_rng(7)
    x = rand(rng, (2, 4), dtype)
    states = [rand(rng, (3, 2, 6), dtype) for _ in layer.cell.states]
    _, _, _, _, offs, work, hbuf, wbuf = layer._stream_state(2, NK)
    name = layer.cell.name
    outs = []
    for K in (NK, NB):
        out = [np.zeros_like(s) for s in states]
        assert K.TABLES[name].stream_step(x, *states, layer.flat_params, offs, *out, work, hbuf,
                                          wbuf)
        outs.append(out)
    for a, b in zip(*outs, strict=True):
        close(b, a, dtype)
    for K in (NK, NB):  # a non-finite input: False, and nothing written
        out = [np.zeros_like(s) for s in states]
        bad = x.copy()
        bad[1, 2] = np.inf
        assert not K.TABLES[name].stream_step(bad, *states, layer.flat_params, offs, *out, work,
                                              hbuf, wbuf)
        assert not any(o.any() for o in out)


def test_vectorised_tanh_is_accurate(NB):
    rng = np.random.default_rng(5)
    x = np.concatenate([
        rng.standard_normal(20000) * 4, rng.standard_normal(5000) * 1e-4,
        [0.0, -0.0, 1e-300, 0.3465, 0.3467, 19.99, 20.0, 25.0, -700.0, 1e308, np.inf, -np.inf],
    ])
    out = np.empty_like(x)
    NB.tanh(x, out)
    ref = np.tanh(x)
    assert np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-300)) <= 4 * np.finfo(float).eps
    assert np.signbit(out[np.flatnonzero(x == 0)[1]])  # tanh(−0) = −0
    nan = np.empty(1)
    NB.tanh(np.array([np.nan]), nan)
    assert np.isnan(nan[0])


def test_vectorised_tanh_float32_is_accurate(NB):
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.standard_normal(20000) * 4, rng.standard_normal(5000) * 1e-3,
                        [0.0, 1e-30, 0.3465, 0.3467, 8.99, 9.0, 30.0, np.inf, -np.inf]])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    NB.tanh(x, out)
    ref = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-38)) <= 2 * np.finfo(np.float32).eps
    nan = np.empty(1, np.float32)
    NB.tanh(np.array([np.nan], np.float32), nan)
    assert np.isnan(nan[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,W,K", [(1, 7, 3), (4, 9, 17), (5, 2, 16), (7, 11, 33), (13, 5, 40),
                                   (10, 768, 256)])
def test_small_products_match_numpy(NB, dtype, B, W, K):
    """``_dot``'s register blocks (five rows × two weight rows), the rows and the odd weight
    row left over, at offsets into the weights and on rows that are views into a wider array."""
    rng = np.random.default_rng(B * W + K)
    a = rand(rng, (B, K + 3), dtype)[:, 3:]
    w = rand(rng, (W + 2, K + 5), dtype)
    out = np.full((B, W), np.nan, dtype)
    NB._dot(a, w, 2, 5, out)
    close(out, a @ w[2:, 5:].T, dtype, terms=K)


# ---------------------------------------------------------------------------------------
# the functional core on both paths: whole-sequence kernel (small) and BLAS loop (large)
# ---------------------------------------------------------------------------------------
def run_core(backend, variant, dtype, T, B, D, H, masked, bias, seed=0):
    npgru.set_backend(backend)
    rng = np.random.default_rng(seed)
    x, h0 = rand(rng, (T, B, D), dtype), rand(rng, (B, H), dtype)
    w_ih, w_hh = rand(rng, (3 * H, D), dtype, 0.3), rand(rng, (3 * H, H), dtype, 0.3)
    b = (rand(rng, (3 * H,), dtype), rand(rng, (3 * H,), dtype)) if bias else (None, None)
    mask = None
    if masked:
        lengths = rng.integers(1, T + 1, B)
        mask = (np.arange(T)[:, None] < lengths[None, :]).astype(dtype)[..., None]
    out, h_n, cache = gru.gru_forward(x, h0, w_ih, w_hh, *b, mask=mask, variant=variant)
    grads = gru.gru_backward(rand(rng, (T, B, H), dtype), rand(rng, (B, H), dtype), cache)
    return [out, h_n, *[g for g in grads if g is not None]]


CORE_SHAPES = {"sequence-kernel": (5, 3, 4, 6), "few-rows": (4, 7, 5, 101), "blas-loop": (4, 40, 5, 48)}


@pytest.mark.parametrize("variant", ["torch", "classic"])
@pytest.mark.parametrize("path", list(CORE_SHAPES))
@pytest.mark.parametrize("dtype,masked,bias", CASES)
def test_functional_core_backends_agree(NB, variant, path, dtype, masked, bias):
    shape = CORE_SHAPES[path]
    T, B, D, H = shape
    # each case really takes the path it is named after; "few-rows" is above the small-shape
    # size and compiled only for its 7 rows (5 in a register block, 2 left over; 3H odd)
    assert B * 3 * H * H > recurrence.SEQ_KERNEL_MAX_MACS or path != "few-rows"
    assert recurrence.use_seq_kernel(NB, B, 3, H) == (path != "blas-loop")
    previous = npgru.get_backend()
    try:
        a = run_core("numpy", variant, dtype, *shape, masked, bias)
        b = run_core("numba", variant, dtype, *shape, masked, bias)
    finally:
        npgru.set_backend(previous)
    for x, y in zip(a, b, strict=True):
        close(y, x, dtype, terms=H / 6)  # the float32 tolerance holds as it is at H = 6


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 5), B=st.integers(1, 4), D=st.integers(1, 4), H=st.integers(1, 5),
       variant=st.sampled_from(["torch", "classic"]), masked=st.booleans(),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_backends_agree_on_random_shapes(T, B, D, H, variant, masked, bias, seed):
    require("numba")
    previous = npgru.get_backend()
    try:
        a = run_core("numpy", variant, np.float64, T, B, D, H, masked, bias, seed)
        b = run_core("numba", variant, np.float64, T, B, D, H, masked, bias, seed)
    finally:
        npgru.set_backend(previous)
    for x, y in zip(a, b, strict=True):
        close(y, x, np.float64)


# ---------------------------------------------------------------------------------------
# the public boundary: nothing reaches a kernel with the wrong shape
# ---------------------------------------------------------------------------------------
def good_args(T=3, B=2, D=4, H=5):
    rng = np.random.default_rng(6)
    return dict(x=rng.standard_normal((T, B, D)), h0=np.zeros((B, H)),
                w_ih=rng.standard_normal((3 * H, D)), w_hh=rng.standard_normal((3 * H, H)),
                b_ih=np.zeros(3 * H), b_hh=np.zeros(3 * H), mask=np.ones((T, B, 1)))


@pytest.mark.parametrize("name,bad,match", [
    ("x", np.zeros((3, 2)), "x must be a non-empty 3-D"),
    ("x", np.zeros((0, 2, 4)), "x must be a non-empty 3-D"),
    ("x", np.zeros((3, 2, 5)), "w_ih must have shape"),
    ("h0", np.zeros((2, 6)), "h0 must have shape"),
    ("h0", np.zeros((3, 5)), "h0 must have shape"),
    ("w_ih", np.zeros((14, 4)), "w_ih must have shape"),
    ("w_hh", np.zeros((15, 4)), "w_hh must have shape"),
    ("b_ih", np.zeros(14), "b_ih must have shape"),
    ("b_hh", None, "both be given"),
    ("mask", np.ones((3, 2)), "mask must have shape"),
    ("mask", np.ones((2, 2, 1)), "mask must have shape"),
])
def test_gru_forward_rejects_bad_shapes(backend, name, bad, match):
    args = good_args()
    args[name] = bad
    with pytest.raises(ValueError, match=match):
        gru.gru_forward(**args)


def test_gru_forward_rejects_bad_dtypes_and_variant(backend):
    args = good_args()
    with pytest.raises(TypeError, match="x must be a real numeric"):
        gru.gru_forward(**{**args, "x": args["x"].astype(complex)})
    with pytest.raises(TypeError, match="float32 or float64"):
        gru.gru_forward(**{**args, "x": args["x"].astype(np.float16), "w_ih": args["w_ih"].astype(
            np.float16), "w_hh": args["w_hh"].astype(np.float16)})
    with pytest.raises(ValueError, match="variant"):
        gru.gru_forward(**args, variant="lstm")


def test_gru_backward_rejects_bad_shapes(backend):
    out, _, cache = gru.gru_forward(**good_args())
    with pytest.raises(ValueError, match="dout must have shape"):
        gru.gru_backward(np.zeros((3, 2, 4)), None, cache)
    with pytest.raises(ValueError, match="dh_n must have shape"):
        gru.gru_backward(np.zeros_like(out), np.zeros((2, 4)), cache)
    with pytest.raises(TypeError, match="GRUCache"):
        gru.gru_backward(np.zeros_like(out), None, {"x": 1})


def test_mixed_dtypes_are_promoted_not_miscompiled(backend):
    args = good_args()
    args["x"] = args["x"].astype(np.float32)
    out, h_n, cache = gru.gru_forward(**args)  # float32 x, float64 weights: computes in float64
    assert out.dtype == np.float64 and cache.arrays["gates"].dtype == np.float64


# ---------------------------------------------------------------------------------------
# backend selection
# ---------------------------------------------------------------------------------------
def test_kernels_follow_the_backend(NB):
    previous = npgru.get_backend()
    try:
        npgru.set_backend("numba")
        assert _backend.kernels() is NB
        npgru.set_backend("numpy")
        assert _backend.kernels() is NK
    finally:
        npgru.set_backend(previous)


def test_environment_variable_selects_the_backend():
    code = "import npgru, sys; print(npgru.get_backend(), 'numba' in sys.modules)"
    env_out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "NPGRU_BACKEND": "numpy"},
                             timeout=120)
    assert env_out.returncode == 0, env_out.stderr
    assert env_out.stdout.split() == ["numpy", "False"]  # and numba was never imported


def test_numba_twins_cover_every_kernel(NB):
    names = [n for n in dir(NK) if n.endswith(("_step_forward", "_step_backward", "_step_gates",
                                               "_backward_reset", "_cell"))]
    assert len(names) == 11  # 8 step kernels, 3 streaming cells
    for n in names:
        assert callable(getattr(NB, n)), n
    assert set(NB.TABLES) == set(NK.TABLES) == {"gru", "gru_classic", "lstm"}
    for name, table in NB.TABLES.items():
        assert all(map(callable, table)) and all(map(callable, NK.TABLES[name])), name


# ---------------------------------------------------------------------------------------
# the GRU layer reuses its arrays between calls: results must not change under the caller
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_outputs_survive_the_next_call(backend, batch_first, bidirectional):
    rng = np.random.default_rng(8)
    a = npgru.GRU(3, 4, 2, batch_first=batch_first, bidirectional=bidirectional, seed=0,
                  dtype=np.float64)
    b = npgru.GRU(3, 4, 2, batch_first=batch_first, bidirectional=bidirectional, seed=0,
                  dtype=np.float64)
    x1, x2 = rng.standard_normal((2, 5, 6, 3))
    out1, h1 = a.forward(x1)
    kept = out1.copy(), h1.copy()
    out2, _ = a.forward(x2)  # reuses a's arrays
    np.testing.assert_array_equal(out1, kept[0])
    np.testing.assert_array_equal(h1, kept[1])
    dout = rng.standard_normal(out2.shape)
    dx_a, _ = a.backward(dout)
    ref2, _ = b.forward(x2)
    dx_b, _ = b.backward(dout)
    np.testing.assert_array_equal(out2, ref2)
    np.testing.assert_array_equal(dx_a, dx_b)
    np.testing.assert_array_equal(a.flat_grads, b.flat_grads)
    x3 = x1[:, :2]  # a new shape: new arrays
    out3, _ = a.forward(x3)
    assert out3.shape == (*x3.shape[:2], 8 if bidirectional else 4)
