"""Per-step element-wise gate math of every cell: the seam between the time loop and the
compiled kernels.

:mod:`npgru.recurrence` runs the GEMMs; everything element-wise inside one step lives here,
behind a few functions per cell, gathered per cell in a :class:`~npgru.cell.CellKernels` table
(``TABLES``, keyed by the cell's name). Each writes into arrays it is given (no
allocation in the time loop). These are the NumPy twins; :mod:`npgru._numba_kernels` has
compiled versions with the same signatures, chosen by :mod:`npgru._backend`, and the tests
run both on the same inputs.

Three levels:

- **step kernels** (``*_step_*``): the fused element-wise math of one time step;
- **loop drivers** (``*_forward_loop`` / ``*_backward_loop``): the time loop with one BLAS GEMM
  per step, calling a backend's step kernels — what large shapes run on either backend;
- **whole-sequence kernels**: the same loop as one call. Here they are the loop drivers with
  the NumPy step kernels; the Numba versions run the time loop and the small hidden GEMMs in
  compiled code, which is what removes Python's per-step cost for small batch and hidden
  sizes;
- **cells** (``*_cell``): one step of one layer for streaming inference, nothing saved.

Shapes: ``T`` steps, ``B`` batch, ``H`` hidden. For the GRU ``gi``/``gh`` are ``(B, 3H)``
pre-activations with column blocks ``[r, z, n]`` (``gi`` includes ``b_ih``; ``b_hh`` (3H,) is
passed separately because ``b_hn`` sits inside ``r ⊙ (·)``; zeros when the layer has no
bias); for the LSTM ``(B, 4H)`` with blocks ``[i, f, g, o]``. ``m`` is the
``(B,)`` step mask (1 while a sequence runs) or ``None`` when every sequence runs the whole
length; ``mask`` is ``(T, B)`` or ``None``.

Backward carries the gradient of ``h_{t−1}`` in two parts, so that each step is one kernel
call and one GEMM: ``dmm = dḡh_{t} · W_hh`` (the GEMM, done by the caller) and ``ddir`` (the
direct part, updated in place by the kernel); ``dh_t = dmm + ddir + m ⊙ dout_t``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import SimpleNamespace

import numpy as np

from .cell import CellKernels, check_tables


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function written as ``(1 + tanh(x/2)) / 2``: no overflow for large ``|x|``."""
    out = np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


def _col(m: np.ndarray | None) -> np.ndarray | None:
    return None if m is None else m[:, None]


def _carry(h_new: np.ndarray, h_prev: np.ndarray, m: np.ndarray | None, h: np.ndarray) -> None:
    """``h = m ⊙ (h_new − h_prev) + h_prev``: a finished sequence keeps its state."""
    if m is None:
        h[...] = h_new
    else:
        np.subtract(h_new, h_prev, out=h)
        h *= m
        h += h_prev


def _dh(dmm, ddir, dout_t, m):
    """``dh_t = dmm + ddir + m ⊙ dout_t`` (padded outputs get no gradient)."""
    dh = dmm + ddir
    dh += dout_t if m is None else dout_t * m
    return dh


# ---------------------------------------------------------------------------------------
# variant="torch": n = tanh(gi_n + r ⊙ gh_n), h = (1 − z) ⊙ n + z ⊙ h_prev
# ---------------------------------------------------------------------------------------
def torch_step_forward(gi, gh, b_hh, h_prev, m, h, gates, hn):
    """One step of the PyTorch-form GRU, after ``gh = h_prev · W_hhᵀ`` (no bias).

    Writes ``h`` (B, H), ``gates`` (B, 3H) = ``[r, z, n]`` and ``hn`` (B, H) = ``gh_n + b_hn``,
    the part of the hidden projection the backward pass needs.
    """
    H = h.shape[1]
    m = _col(m)
    rz = gates[:, : 2 * H]
    np.add(gi[:, : 2 * H], gh[:, : 2 * H], out=rz)
    rz += b_hh[: 2 * H]
    sigmoid(rz, out=rz)
    r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
    np.add(gh[:, 2 * H :], b_hh[2 * H :], out=hn)
    np.multiply(r, hn, out=n)
    n += gi[:, 2 * H :]
    np.tanh(n, out=n)
    # h_new = n + z ⊙ (h_prev − n)
    h_new = np.subtract(h_prev, n)
    h_new *= z
    h_new += n
    _carry(h_new, h_prev, m, h)


def torch_step_backward(dmm, ddir, dout_t, gates, hn, h_prev, m, dgi, dgh):
    """Backward of one PyTorch-form step (as ATen's GRU cell).

    Writes the pre-activation gradients ``dgi`` (input side) and ``dgh`` (hidden side), both
    (B, 3H), and replaces ``ddir`` by the part of ``dh_prev`` that does not go through ``W_hh``.
    """
    H = dmm.shape[1]
    m = _col(m)
    r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
    dh = _dh(dmm, ddir, dout_t, m)
    dhm = dh if m is None else dh * m
    # dz̄ = dh ⊙ (h_prev − n) ⊙ z(1 − z)
    dgi[:, H : 2 * H] = dhm * (h_prev - n) * z * (1 - z)
    # dn̄ = dh ⊙ (1 − z) ⊙ (1 − n²)
    dgi[:, 2 * H :] = dhm * (1 - z) * (1 - n * n)
    # dr̄ = dn̄ ⊙ gh_n ⊙ r(1 − r)
    dgi[:, :H] = dgi[:, 2 * H :] * hn * r * (1 - r)
    # the hidden side sees r ⊙ gh_n, so its candidate block is dn̄ ⊙ r
    dgh[:, : 2 * H] = dgi[:, : 2 * H]
    np.multiply(dgi[:, 2 * H :], r, out=dgh[:, 2 * H :])
    # ∂h/∂h_prev directly: z (and 1 for a finished sequence)
    np.multiply(dhm, z, out=ddir)
    if m is not None:
        ddir += dh * (1 - m)


def torch_forward_loop(K, gi, w_hh, b_hh, mask, hs, gates, hid):
    """Time loop, forward: one BLAS GEMM per step, then ``K.torch_step_forward``.

    ``hs`` (T+1, B, H) holds ``h0`` in ``hs[0]`` and receives every state.
    """
    T, B, _ = gi.shape
    # pre-transposed once: OpenBLAS multiplies a small-M state by a contiguous (H, 3H) matrix
    # about 2× faster than by the transposed view of W_hh (measured, LEAF shapes)
    u_t = np.ascontiguousarray(w_hh.T)
    gh = np.empty_like(gi[0])
    for t in range(T):
        np.matmul(hs[t], u_t, out=gh)
        K.torch_step_forward(gi[t], gh, b_hh, hs[t], _at(mask, t), hs[t + 1], gates[t], hid[t])


def torch_backward_loop(K, dout, dh_n, hs, gates, hid, mask, w_hh, dgi, dgh_n):
    """Time loop, backward: ``K.torch_step_backward`` then ``dmm = dgh_t · W_hh``; returns dh0.

    Only the candidate block of the hidden-side gradient is kept (``dgh_n`` (T, B, H)): the
    other two blocks equal ``dgi``'s, so storing them would cost T·B·2H for nothing.
    """
    T = dout.shape[0]
    dmm = np.zeros_like(dh_n)
    ddir = dh_n.copy()
    H = dh_n.shape[1]
    dgh = np.empty_like(dgi[0])  # this step's full (B, 3H) hidden-side gradient
    for t in range(T - 1, -1, -1):
        K.torch_step_backward(dmm, ddir, dout[t], gates[t], hid[t], hs[t], _at(mask, t), dgi[t], dgh)
        dgh_n[t] = dgh[:, 2 * H :]
        # dh_prev = ddir + dgh · W_hh
        np.matmul(dgh, w_hh, out=dmm)
    dmm += ddir
    return dmm


# ---------------------------------------------------------------------------------------
# variant="classic": h̃ = tanh(gi_n + U_n (r ⊙ h_prev) + c_n), h = (1 − z) ⊙ h_prev + z ⊙ h̃
# ---------------------------------------------------------------------------------------
def classic_step_gates(gi, gh_rz, b_hh, h_prev, gates, rh):
    """First half of a classic step: ``r``, ``z`` into ``gates`` and ``rh = r ⊙ h_prev``."""
    H = h_prev.shape[1]
    rz = gates[:, : 2 * H]
    np.add(gi[:, : 2 * H], gh_rz, out=rz)
    rz += b_hh[: 2 * H]
    sigmoid(rz, out=rz)
    np.multiply(gates[:, :H], h_prev, out=rh)


def classic_step_forward(gi, gh_n, b_hh, h_prev, m, h, gates):
    """Second half of a classic step, after ``gh_n = U_n (r ⊙ h_prev)`` (no bias)."""
    H = h.shape[1]
    m = _col(m)
    z, n = gates[:, H : 2 * H], gates[:, 2 * H :]
    np.add(gi[:, 2 * H :], gh_n, out=n)
    n += b_hh[2 * H :]
    np.tanh(n, out=n)
    # h_new = h_prev + z ⊙ (h̃ − h_prev)
    h_new = np.subtract(n, h_prev)
    h_new *= z
    h_new += h_prev
    _carry(h_new, h_prev, m, h)


def classic_step_backward(dmm, ddir, dout_t, gates, h_prev, m, dgi):
    """Backward of a classic step, update and candidate part.

    Writes ``dz̄`` and ``dn̄`` into ``dgi`` and replaces ``ddir`` by the direct part of ``dh_prev``.
    """
    H = dmm.shape[1]
    m = _col(m)
    z, n = gates[:, H : 2 * H], gates[:, 2 * H :]
    dh = _dh(dmm, ddir, dout_t, m)
    dhm = dh if m is None else dh * m
    # dz̄ = dh ⊙ (h̃ − h_prev) ⊙ z(1 − z)
    dgi[:, H : 2 * H] = dhm * (n - h_prev) * z * (1 - z)
    # dn̄ = dh ⊙ z ⊙ (1 − h̃²)
    dgi[:, 2 * H :] = dhm * z * (1 - n * n)
    # ∂h/∂h_prev directly: 1 − z (and 1 for a finished sequence)
    np.multiply(dhm, 1 - z, out=ddir)
    if m is not None:
        ddir += dh * (1 - m)


def classic_step_backward_reset(drh, gates, h_prev, dgi, ddir):
    """Backward through ``rh = r ⊙ h_prev`` given ``drh = dn̄ U_n``.

    Writes ``dr̄`` into ``dgi`` and adds ``drh ⊙ r`` to ``ddir``.
    """
    H = drh.shape[1]
    r = gates[:, :H]
    # dr̄ = drh ⊙ h_prev ⊙ r(1 − r)
    dgi[:, :H] = drh * h_prev * r * (1 - r)
    # d h_prev += drh ⊙ r
    ddir += drh * r


def classic_forward_loop(K, gi, w_hh, b_hh, mask, hs, gates, hid):
    """Time loop, forward, classic: two BLAS GEMMs per step around ``K``'s step kernels."""
    T, B, H3 = gi.shape
    H = H3 // 3
    u_rz_t = np.ascontiguousarray(w_hh[: 2 * H].T)  # pre-transposed, as in torch_forward_loop
    u_n_t = np.ascontiguousarray(w_hh[2 * H :].T)
    gh_rz = np.empty((B, 2 * H), dtype=gi.dtype)
    gh_n = np.empty((B, H), dtype=gi.dtype)
    for t in range(T):
        np.matmul(hs[t], u_rz_t, out=gh_rz)
        K.classic_step_gates(gi[t], gh_rz, b_hh, hs[t], gates[t], hid[t])
        np.matmul(hid[t], u_n_t, out=gh_n)
        K.classic_step_forward(gi[t], gh_n, b_hh, hs[t], _at(mask, t), hs[t + 1], gates[t])


def classic_backward_loop(K, dout, dh_n, hs, gates, hid, mask, w_hh, dgi, dgh=None):
    """Time loop, backward, classic; returns ``dh0`` (``dgh`` is unused: ``dW_hh`` comes from
    ``dgi`` and ``hid``)."""
    T, B, H = dout.shape
    u_rz, u_n = w_hh[: 2 * H], w_hh[2 * H :]
    dmm = np.zeros_like(dh_n)
    ddir = dh_n.copy()
    drh = np.empty_like(dh_n)
    for t in range(T - 1, -1, -1):
        g = dgi[t]
        K.classic_step_backward(dmm, ddir, dout[t], gates[t], hs[t], _at(mask, t), g)
        # d(r ⊙ h_prev) = dn̄ · U_n
        np.matmul(g[:, 2 * H :], u_n, out=drh)
        K.classic_step_backward_reset(drh, gates[t], hs[t], g, ddir)
        # dh_prev = ddir + [dr̄, dz̄] · U_rz
        np.matmul(g[:, : 2 * H], u_rz, out=dmm)
    dmm += ddir
    return dmm


# ---------------------------------------------------------------------------------------
# streaming cells: one step of one layer, nothing kept for backward
# ---------------------------------------------------------------------------------------
# The cells work in transposed space: ``W · xᵀ`` (3H, B) gives BLAS its weights untransposed
# and row-major, which at small batches runs 1.3–2× faster than ``x · Wᵀ`` (measured in
# thread CPU time on one core at B = 10–64, H = 64–256; equal at B = 128, H = 512). The
# gate blocks are then contiguous row blocks and the new state is written through ``hᵀ``.
def _transposed(work_k: np.ndarray, rows: int) -> np.ndarray:
    """A (rows, B) view of the contiguous (B, rows) scratch ``work_k``."""
    return work_k.reshape(rows, work_k.shape[0])


def torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """``h = GRUCell(x, h_prev)``, PyTorch form. ``work`` is scratch of shape (≥3, B, 3H)."""
    H = h.shape[1]
    giT, ghT = _transposed(work[0], 3 * H), _transposed(work[1], 3 * H)
    np.matmul(w_ih, x.T, out=giT)
    giT += b_ih[:, None]
    np.matmul(w_hh, h_prev.T, out=ghT)
    ghT += b_hh[:, None]
    rz = giT[: 2 * H]
    rz += ghT[: 2 * H]
    sigmoid(rz, out=rz)
    r, z, n = giT[:H], giT[H : 2 * H], giT[2 * H :]
    gh_n = ghT[2 * H :]
    gh_n *= r
    n += gh_n
    np.tanh(n, out=n)
    # h = n + z ⊙ (h_prev − n)
    hT = h.T
    np.subtract(h_prev.T, n, out=hT)
    hT *= z
    hT += n


def classic_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """One classic-form step. ``work`` is scratch of shape (≥3, B, 3H)."""
    H = h.shape[1]
    giT, gT, w2T = (_transposed(work[k], 3 * H) for k in range(3))
    np.matmul(w_ih, x.T, out=giT)
    giT += b_ih[:, None]
    gh_rz, rh, gh_n = gT[: 2 * H], w2T[:H], w2T[H : 2 * H]
    np.matmul(w_hh[: 2 * H], h_prev.T, out=gh_rz)
    gh_rz += b_hh[: 2 * H, None]
    rz = giT[: 2 * H]
    rz += gh_rz
    sigmoid(rz, out=rz)
    np.multiply(giT[:H], h_prev.T, out=rh)
    np.matmul(w_hh[2 * H :], rh, out=gh_n)
    gh_n += b_hh[2 * H :, None]
    n = giT[2 * H :]
    n += gh_n
    np.tanh(n, out=n)
    # h = h_prev + z ⊙ (h̃ − h_prev)
    hT = h.T
    np.subtract(n, h_prev.T, out=hT)
    hT *= giT[H : 2 * H]
    hT += h_prev.T


def layer_weights(flat, o, G: int, H: int, zeros):
    """Layer views ``W_ih (GH, D)``, ``W_hh (GH, H)``, ``b_ih``, ``b_hh`` into the flat parameter
    vector at offsets ``o = [w_ih, w_hh, b_ih, b_hh, D]`` (−1 for an absent bias: ``zeros``)."""
    D = int(o[4])
    w_ih = flat[o[0] : o[0] + G * H * D].reshape(G * H, D)
    w_hh = flat[o[1] : o[1] + G * H * H].reshape(G * H, H)
    b_ih = flat[o[2] : o[2] + G * H] if o[2] >= 0 else zeros
    b_hh = flat[o[3] : o[3] + G * H] if o[3] >= 0 else zeros
    return w_ih, w_hh, b_ih, b_hh


def stream_layers(cell, x, states, flat, offs, outs, work, hbuf) -> bool:
    """One step of every layer for streaming inference, for any cell.

    ``x`` (B, D); ``states`` and ``outs`` one (L, B, H) array per state (an ``out`` may be its
    state itself). Layer ``k``'s parameters are read from the flat parameter vector at offsets
    ``offs[k]`` (:func:`layer_weights`; an absent bias reads ``work[3, 0]``, kept zero).
    ``work`` (4, B, GH) and ``hbuf`` (states·B, H) are scratch. ``cell(x, *state_k, w_ih,
    w_hh, b_ih, b_hh, *new_k, work)`` computes one layer. Returns ``False``, writing nothing,
    if ``x`` or a state holds NaN or Inf.
    """
    L, B, H = states[0].shape
    if not all_finite(x, *states):
        return False
    G = work.shape[2] // H
    new = [hbuf[j * B : (j + 1) * B] for j in range(len(states))]
    inp = x
    for k in range(L):
        # into hbuf first: an out may be its state, read until the cell is done
        cell(inp, *[s[k] for s in states], *layer_weights(flat, offs[k], G, H, work[3, 0]),
             *new, work)
        for o, n in zip(outs, new, strict=True):
            o[k] = n
        inp = outs[0][k]
    return True


def gru_stream_step(cell, x, h, flat, offs, out, work, hbuf, wbuf) -> bool:
    """:func:`stream_layers` for a GRU cell (``wbuf`` is the compiled kernels' scratch)."""
    return stream_layers(cell, x, (h,), flat, offs, (out,), work, hbuf)


_ZEROS: dict = {}  # dtype -> a zero vector, grown when needed, never written


def _zeros(a: np.ndarray) -> np.ndarray:
    z = _ZEROS.get(a.dtype)
    if z is None or z.size < a.size:
        z = _ZEROS[a.dtype] = np.zeros(max(a.size, 4096), dtype=a.dtype)
    return z[: a.size]


def all_finite(*arrays: np.ndarray) -> bool:
    """True if no array holds NaN or Inf.

    ``Σ v·0`` is 0 when every ``v`` is finite and NaN otherwise: a check through BLAS dot
    that, unlike ``np.isfinite(v).all()``, allocates nothing of ``v``'s size.
    """
    with np.errstate(invalid="ignore"):
        return all(np.dot(v, _zeros(v)) == 0 for v in (a.reshape(-1) for a in arrays))


def _at(mask, t):
    return None if mask is None else mask[t]


# ---------------------------------------------------------------------------------------
# LSTM: gates [i, f, g, o]; c = f ⊙ c_prev + i ⊙ g, h = o ⊙ tanh(c)
# ---------------------------------------------------------------------------------------
def _lstm_activate(a: np.ndarray) -> None:
    """``[i, f, g, o] = [σ, σ, tanh, σ]`` of the pre-activations, in place."""
    H = a.shape[1] // 4
    sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])
    np.tanh(a[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])
    sigmoid(a[:, 3 * H :], out=a[:, 3 * H :])


def lstm_step_forward(gi, gh, b_hh, h_prev, c_prev, m, h, c, gates):
    """One LSTM step after ``gh = h_prev · W_hhᵀ`` (no bias): writes ``h``, ``c`` (B, H) and
    ``gates`` (B, 4H) = ``[i, f, g, o]`` after their nonlinearities."""
    H = h.shape[1]
    m = _col(m)
    np.add(gi, gh, out=gates)
    gates += b_hh
    _lstm_activate(gates)
    i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
    c_new = f * c_prev
    c_new += i * g
    h_new = np.tanh(c_new)
    h_new *= o
    _carry(c_new, c_prev, m, c)
    _carry(h_new, h_prev, m, h)


def lstm_step_backward(dmm, ddir, dc, dout_t, gates, c_prev, c, m, dgi):
    """Backward of one LSTM step; ``c`` is the cell state after it.

    Writes ``dgi`` (B, 4H), the pre-activation gradient (the hidden side's is the same), and
    replaces ``ddir`` by the direct part of ``dh_prev`` (nonzero only for a finished
    sequence) and ``dc`` by ``dc_prev``.
    """
    H = dmm.shape[1]
    m = _col(m)
    i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
    dh = _dh(dmm, ddir, dout_t, m)
    dhm = dh if m is None else dh * m
    tc = np.tanh(c)
    # dc_t = dc ⊙ m + dh ⊙ o ⊙ (1 − tanh²c)
    dct = dc * (1 if m is None else m) + dhm * o * (1 - tc * tc)
    dgi[:, 3 * H :] = dhm * tc * o * (1 - o)  # dō
    dgi[:, :H] = dct * g * i * (1 - i)  # dī
    dgi[:, H : 2 * H] = dct * c_prev * f * (1 - f)  # df̄
    dgi[:, 2 * H : 3 * H] = dct * i * (1 - g * g)  # dḡ
    # a finished sequence passes dh and dc straight through
    if m is None:
        np.multiply(dct, f, out=dc)
        ddir[...] = 0
    else:
        dc *= 1 - m
        dc += dct * f
        np.multiply(dh, 1 - m, out=ddir)


def lstm_forward_loop(K, gi, w_hh, b_hh, mask, hs, cs, gates):
    """Time loop, forward: one BLAS GEMM per step, then ``K.lstm_step_forward``."""
    u_t = np.ascontiguousarray(w_hh.T)  # pre-transposed, as in torch_forward_loop
    gh = np.empty_like(gi[0])
    for t in range(gi.shape[0]):
        np.matmul(hs[t], u_t, out=gh)
        K.lstm_step_forward(gi[t], gh, b_hh, hs[t], cs[t], _at(mask, t), hs[t + 1], cs[t + 1],
                            gates[t])


def lstm_backward_loop(K, dout, dh_n, dc_n, hs, cs, gates, mask, w_hh, dgi, dgh=None):
    """Time loop, backward; returns ``(dh0, dc0)`` (``dgh`` is unused: it equals ``dgi``)."""
    dmm = np.zeros_like(dh_n)
    ddir, dc = dh_n.copy(), dc_n.copy()
    for t in range(dout.shape[0] - 1, -1, -1):
        K.lstm_step_backward(dmm, ddir, dc, dout[t], gates[t], cs[t], cs[t + 1], _at(mask, t),
                             dgi[t])
        np.matmul(dgi[t], w_hh, out=dmm)  # dh_prev = ddir + dgates · W_hh
    dmm += ddir
    return dmm, dc


def lstm_cell(x, h_prev, c_prev, w_ih, w_hh, b_ih, b_hh, h, c, work):
    """``h, c = LSTMCell(x, (h_prev, c_prev))``. ``work`` is scratch of shape (≥2, B, 4H)."""
    H = h.shape[1]
    a, gh = work[0], work[1]
    np.matmul(x, w_ih.T, out=a)
    a += b_ih
    np.matmul(h_prev, w_hh.T, out=gh)
    a += gh
    a += b_hh
    _lstm_activate(a)
    np.multiply(a[:, H : 2 * H], c_prev, out=c)
    ig = np.multiply(a[:, :H], a[:, 2 * H : 3 * H], out=gh[:, :H])
    c += ig
    np.tanh(c, out=h)
    h *= a[:, 3 * H :]


def lstm_stream_step(x, h, c, flat, offs, out_h, out_c, work, hbuf, wbuf) -> bool:
    """:func:`stream_layers` for the LSTM (``wbuf`` is the compiled kernels' scratch)."""
    return stream_layers(lstm_cell, x, (h, c), flat, offs, (out_h, out_c), work, hbuf)


# ---------------------------------------------------------------------------------------
# the kernel tables: the loop drivers take the step kernels they call; on the NumPy backend
# the whole-sequence kernels are those drivers with the NumPy step kernels
# ---------------------------------------------------------------------------------------
#: the step kernels the loop drivers call; each backend module defines every one
STEP_KERNELS = (
    "torch_step_forward", "torch_step_backward", "classic_step_gates", "classic_step_forward",
    "classic_step_backward", "classic_step_backward_reset", "lstm_step_forward",
    "lstm_step_backward",
)


def step_kernels(module_globals: dict) -> SimpleNamespace:
    """The :data:`STEP_KERNELS` of a backend module, as the namespace the loop drivers take."""
    missing = [n for n in STEP_KERNELS if not callable(module_globals.get(n))]
    if missing:
        raise TypeError(f"step kernels missing from {module_globals['__name__']}: {missing}")
    return SimpleNamespace(**{n: module_globals[n] for n in STEP_KERNELS})


STEPS = step_kernels(globals())

LOOPS: dict[str, tuple[Callable, Callable]] = {  # cell name -> (forward, backward loop driver)
    "gru": (torch_forward_loop, torch_backward_loop),
    "gru_classic": (classic_forward_loop, classic_backward_loop),
    "lstm": (lstm_forward_loop, lstm_backward_loop),
}


def loop_table(steps, name: str, seq_forward, seq_backward, stream_step) -> CellKernels:
    """A table whose loop drivers call ``steps``' step kernels."""
    fwd, bwd = LOOPS[name]
    return CellKernels(seq_forward, seq_backward, partial(fwd, steps), partial(bwd, steps),
                       stream_step)


STREAMS = {
    "gru": partial(gru_stream_step, torch_cell),
    "gru_classic": partial(gru_stream_step, classic_cell),
    "lstm": lstm_stream_step,
}
TABLES = {name: loop_table(STEPS, name, partial(fwd, STEPS), partial(bwd, STEPS), STREAMS[name])
          for name, (fwd, bwd) in LOOPS.items()}
check_tables(TABLES)
