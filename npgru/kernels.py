"""Per-step element-wise gate math: the seam between the time loop and the compiled kernels.

``gru.py`` runs the GEMMs; everything element-wise inside one step lives here, behind a few
functions per variant with fixed signatures. Each writes into arrays it is given (no
allocation in the time loop). These are the NumPy twins; :mod:`npgru._numba_kernels` has
compiled versions with the same signatures, chosen by :mod:`npgru._backend`, and the tests
run both on the same inputs.

Three levels:

- **step kernels** (``*_step_*``): the fused element-wise math of one time step;
- **loop drivers** (``*_forward_loop`` / ``*_backward_loop``): the time loop with one BLAS GEMM
  per step, calling a backend's step kernels — what large shapes run on either backend;
- **whole-sequence kernels** (``*_seq_*``): the same loop as one call. Here they are the loop
  drivers with the NumPy step kernels; the Numba versions run the time loop and the small
  hidden GEMMs in compiled code, which is what removes Python's per-step cost for small
  batch and hidden sizes;
- **cells** (``*_cell``): one step of one layer for streaming inference, nothing saved.

Shapes: ``T`` steps, ``B`` batch, ``H`` hidden. ``gi``/``gh`` are ``(B, 3H)`` pre-activations with
column blocks ``[r, z, n]`` (``gi`` includes ``b_ih``; ``b_hh`` (3H,) is passed separately
because ``b_hn`` sits inside ``r ⊙ (·)``; zeros when the layer has no bias). ``m`` is the
``(B,)`` step mask (1 while a sequence runs) or ``None`` when every sequence runs the whole
length; ``mask`` is ``(T, B)`` or ``None``.

Backward carries the gradient of ``h_{t−1}`` in two parts, so that each step is one kernel
call and one GEMM: ``dmm = dḡh_{t} · W_hh`` (the GEMM, done by the caller) and ``ddir`` (the
direct part, updated in place by the kernel); ``dh_t = dmm + ddir + m ⊙ dout_t``.
"""

from __future__ import annotations

import types

import numpy as np


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


def torch_backward_loop(K, dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh_n):
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


def torch_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    """Forward over the whole sequence (writes ``hs[1:]``, ``gates``, ``hid``)."""
    torch_forward_loop(_self, gi, w_hh, b_hh, mask, hs, gates, hid)


def torch_seq_backward(dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh_n):
    """Backward over the whole sequence (writes ``dgi`` and ``dgh_n`` = ``dn̄ ⊙ r``, the
    candidate block of the hidden-side gradient); returns ``dh0``."""
    return torch_backward_loop(_self, dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh_n)


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


def classic_backward_loop(K, dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh=None):
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


def classic_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    """Classic forward over the whole sequence (``hid`` receives ``r ⊙ h_prev``)."""
    classic_forward_loop(_self, gi, w_hh, b_hh, mask, hs, gates, hid)


def classic_seq_backward(dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh=None):
    """Classic backward over the whole sequence (writes ``dgi``); returns ``dh0``."""
    return classic_backward_loop(_self, dout, dh_n, gates, hid, hs, mask, w_hh, dgi)


# ---------------------------------------------------------------------------------------
# streaming cells: one step of one layer, nothing kept for backward
# ---------------------------------------------------------------------------------------
def torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """``h = GRUCell(x, h_prev)``, PyTorch form. ``work`` is scratch of shape (≥3, B, 3H)."""
    H = h.shape[1]
    gi, gh = work[0], work[1]
    np.matmul(x, w_ih.T, out=gi)
    gi += b_ih
    np.matmul(h_prev, w_hh.T, out=gh)
    gh += b_hh
    rz = gi[:, : 2 * H]
    rz += gh[:, : 2 * H]
    sigmoid(rz, out=rz)
    r, z, n = gi[:, :H], gi[:, H : 2 * H], gi[:, 2 * H :]
    gh_n = gh[:, 2 * H :]
    gh_n *= r
    n += gh_n
    np.tanh(n, out=n)
    # h = n + z ⊙ (h_prev − n)
    np.subtract(h_prev, n, out=h)
    h *= z
    h += n


def classic_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """One classic-form step. ``work`` is scratch of shape (≥3, B, 3H)."""
    H = h.shape[1]
    gi, g, w2 = work[0], work[1], work[2]
    np.matmul(x, w_ih.T, out=gi)
    gi += b_ih
    gh_rz, rh, gh_n = g[:, : 2 * H], w2[:, :H], w2[:, H : 2 * H]
    np.matmul(h_prev, w_hh[: 2 * H].T, out=gh_rz)
    gh_rz += b_hh[: 2 * H]
    rz = gi[:, : 2 * H]
    rz += gh_rz
    sigmoid(rz, out=rz)
    np.multiply(gi[:, :H], h_prev, out=rh)
    np.matmul(rh, w_hh[2 * H :].T, out=gh_n)
    gh_n += b_hh[2 * H :]
    n = gi[:, 2 * H :]
    n += gh_n
    np.tanh(n, out=n)
    # h = h_prev + z ⊙ (h̃ − h_prev)
    np.subtract(n, h_prev, out=h)
    h *= gi[:, H : 2 * H]
    h += h_prev


def stream_step(x, h, flat, offs, out, work, hbuf, wbuf, cell=None) -> bool:
    """One step of every layer for streaming inference (``GRU.step``), PyTorch form.

    ``x`` (B, D), ``h`` and ``out`` (L, B, H) (``out`` may be ``h``). Layer ``k``'s
    parameters are read from the flat parameter vector at offsets
    ``offs[k] = [w_ih, w_hh, b_ih, b_hh, D_k]`` (−1 for an absent bias, which reads
    ``work[3, 0]``, kept zero). ``work`` (4, B, 3H), ``hbuf`` (B, H) and ``wbuf`` (1-D; the
    compiled kernel transposes a short ``W_ih`` into it) are scratch. Returns
    ``False``, writing nothing, if ``x`` or ``h`` holds NaN or Inf.
    """
    L, B, H = h.shape
    if not all_finite(x.reshape(-1), h.reshape(-1)):
        return False
    cell = torch_cell if cell is None else cell
    zeros = work[3, 0]
    inp = x
    for k in range(L):
        o = offs[k]
        D = int(o[4])
        w_ih = flat[o[0] : o[0] + 3 * H * D].reshape(3 * H, D)
        w_hh = flat[o[1] : o[1] + 3 * H * H].reshape(3 * H, H)
        b_ih = flat[o[2] : o[2] + 3 * H] if o[2] >= 0 else zeros
        b_hh = flat[o[3] : o[3] + 3 * H] if o[3] >= 0 else zeros
        cell(inp, h[k], w_ih, w_hh, b_ih, b_hh, hbuf, work)  # h[k] is read until done
        out[k] = hbuf
        inp = out[k]
    return True


def classic_stream_step(x, h, flat, offs, out, work, hbuf, wbuf) -> bool:
    """:func:`stream_step` for the classic form."""
    return stream_step(x, h, flat, offs, out, work, hbuf, wbuf, classic_cell)


_ZEROS: dict = {}  # dtype -> a zero vector, grown when needed, never written


def _zeros(a: np.ndarray) -> np.ndarray:
    z = _ZEROS.get(a.dtype)
    if z is None or z.size < a.size:
        z = _ZEROS[a.dtype] = np.zeros(max(a.size, 4096), dtype=a.dtype)
    return z[: a.size]


def all_finite(a: np.ndarray, b: np.ndarray) -> bool:
    """True if the 1-D arrays ``a`` and ``b`` hold no NaN or Inf.

    ``Σ v·0`` is 0 when every ``v`` is finite and NaN otherwise: a check through BLAS dot
    that, unlike ``np.isfinite(v).all()``, allocates nothing of ``v``'s size.
    """
    with np.errstate(invalid="ignore"):
        return bool(np.dot(a, _zeros(a)) == 0 and np.dot(b, _zeros(b)) == 0)


def _at(mask, t):
    return None if mask is None else mask[t]


# the loop drivers take a kernels module; the NumPy twins pass this one
_self = types.SimpleNamespace(
    torch_step_forward=torch_step_forward,
    torch_step_backward=torch_step_backward,
    classic_step_gates=classic_step_gates,
    classic_step_forward=classic_step_forward,
    classic_step_backward=classic_step_backward,
    classic_step_backward_reset=classic_step_backward_reset,
)
