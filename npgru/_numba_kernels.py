"""Numba kernels: the compiled twins of :mod:`npgru.kernels`, plus whole-sequence time loops.

Imported only when the Numba backend is active (:func:`npgru._backend.kernels`), so
``import npgru`` never imports Numba; every function compiles on its first call and is cached
on disk (``cache=True``), so a new process loads it instead of compiling again.

Design decisions, and why:

- **GEMMs.** ``np.dot``/``@`` inside ``@njit`` needs SciPy (Numba calls SciPy's BLAS), and npgru
  does not depend on SciPy. So the big GEMMs (the input projection of all steps, ``dx`` and the
  weight gradients, the per-step hidden GEMM of large shapes) stay in NumPy's BLAS, and the
  compiled code multiplies only *small* matrices, written as loops: the hidden GEMM of
  whole-sequence kernels used when the batch and hidden size are small, where Python's
  per-step cost (≈10 µs a step) is larger than the arithmetic. ``gru.py`` chooses per shape.
- **Transcendentals.** ``math.tanh`` compiles to a scalar libm call (≈13 ns) that blocks
  vectorisation, ≈90× slower than NumPy's SIMD ``tanh``. :func:`_tanh` is written in plain
  arithmetic (range reduction, a degree-15 polynomial for ``expm1``, an exponent built by a
  bit cast) so LLVM vectorises it: ≈0.6 ns an element, within 2 ulp of float64 ``tanh``. It
  computes in float64 for both dtypes, so float32 results are at least as accurate as NumPy's.
- **Flags.** ``error_model="numpy"`` (a division by zero gives inf instead of raising, which
  would stop vectorisation) and ``fastmath={"contract"}`` (fused multiply-add; changes results
  by rounding only). Only the streaming cell kernels also allow ``"reassoc"``, so that their
  dot products over contiguous weight rows vectorise. No ``nnan``/``ninf``: NaN must survive.
- **Specialisations.** One per dtype, plus ``m is None`` for the per-step kernels; the
  whole-sequence kernels take an empty mask for "no mask" (:func:`_mask_or_empty`), so a test
  run compiles a few dozen small functions (seconds, then cached).

Kernels never check shapes: :func:`npgru.gru.gru_forward` / ``gru_backward`` and the
``GRU`` layer validate every shape and dtype first, so nothing can index out of bounds.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from . import kernels as _twins

COMPILED = True  # gru.py sends small shapes to the whole-sequence kernels only when set

_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
_JIT_DOT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc"})
_INLINE = dict(inline="always", error_model="numpy", fastmath={"contract"})

# ---------------------------------------------------------------------------------------
# scalar math that vectorises
# ---------------------------------------------------------------------------------------
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two so k·ln2 is exact (Cody–Waite)
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
# Taylor coefficients 1/n! of expm1 on |r| ≤ ln2/2; the n = 15 term is below 2e-17·|r|
(_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13, _C14, _C15) = (
    1.0 / math.factorial(n) for n in range(2, 16)
)


@intrinsic
def _pow2(typingctx, k):
    """``2.0**k`` for an int64 ``k`` in the normal range, by writing the exponent bits."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())

    return sig, codegen


@njit(**_INLINE)
def _tanh(x):
    """``tanh(x)`` in float64 arithmetic that LLVM can vectorise (≤ 2 ulp).

    ``tanh|x| = −e/(e + 2)`` with ``e = expm1(−2|x|)``; ``expm1`` by ``y = k·ln2 + r``,
    ``expm1(y) = 2^k·expm1(r) + (2^k − 1)`` — no cancellation near 0, where ``k = 0``.
    ``|x|`` is clamped at 20, where float64 ``tanh`` is already exactly 1.
    """
    a = abs(x)
    a = a if a < 20.0 else 20.0
    y = -2.0 * a
    k = -np.int64(0.5 - y * _INV_LN2)  # round(y / ln2), y ≤ 0
    kf = np.float64(k)
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    p = _C15
    p = p * r + _C14
    p = p * r + _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    em_r = r + r * r * p
    s = _pow2(k)
    em = s * em_r + (s - 1.0)
    return math.copysign(-em / (em + 2.0), x)


@njit(**_INLINE)
def _sigmoid(x):
    """σ(x) = (1 + tanh(x/2)) / 2, the same formula as the NumPy twin: no overflow."""
    return 0.5 + 0.5 * _tanh(0.5 * x)


@njit(cache=True, nogil=True, error_model="numpy")
def tanh(x, out):
    """Vectorised :func:`_tanh` over a 1-D array (exposed for tests of its accuracy)."""
    for i in range(x.shape[0]):
        out[i] = _tanh(x[i])


# ---------------------------------------------------------------------------------------
# small matrix products as loops (whole-sequence and cell kernels only)
# ---------------------------------------------------------------------------------------
@njit(**_INLINE)
def _mm_t(a, wt, c0, out):
    """``out = a @ wt[:, c0:c0+W]`` with ``wt`` a pre-transposed weight (K, ·).

    The inner loop runs along a contiguous row of ``wt`` and of ``out`` (an axpy), which
    vectorises without reassociation.
    """
    B, K = a.shape
    W = out.shape[1]
    for b in range(B):
        for j in range(W):
            out[b, j] = 0.0
        for k in range(K):
            ak = a[b, k]
            for j in range(W):
                out[b, j] += ak * wt[k, c0 + j]


@njit(**_INLINE)
def _mm_rows(a, w, r0, out):
    """``out = a @ w[r0:r0+J]`` with ``a`` (B, J): the backward ``dgh · W_hh`` (an axpy)."""
    B, J = a.shape
    K = out.shape[1]
    for b in range(B):
        for k in range(K):
            out[b, k] = 0.0
        for j in range(J):
            aj = a[b, j]
            for k in range(K):
                out[b, k] += aj * w[r0 + j, k]


# ---------------------------------------------------------------------------------------
# element-wise step math, one helper per kernel; `use_mask` False ignores `m`
# ---------------------------------------------------------------------------------------
@njit(**_INLINE)
def _torch_fwd(gi, gh, b_hh, h_prev, m, use_mask, h, gates, hn):
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            r = _sigmoid(gi[b, j] + gh[b, j] + b_hh[j])
            z = _sigmoid(gi[b, H + j] + gh[b, H + j] + b_hh[H + j])
            ghn = gh[b, 2 * H + j] + b_hh[2 * H + j]
            n = _tanh(gi[b, 2 * H + j] + r * ghn)
            hp = h_prev[b, j]
            h_new = n + z * (hp - n)
            if use_mask:
                h_new = (h_new - hp) * m[b] + hp  # a finished sequence keeps its state
            gates[b, j] = r
            gates[b, H + j] = z
            gates[b, 2 * H + j] = n
            hn[b, j] = ghn
            h[b, j] = h_new


@njit(**_INLINE)
def _torch_bwd(dmm, ddir, dout_t, gates, hn, h_prev, m, use_mask, dgi, dgh):
    B, H = dmm.shape
    for b in range(B):
        mb = m[b] if use_mask else 1.0
        for j in range(H):
            r = gates[b, j]
            z = gates[b, H + j]
            n = gates[b, 2 * H + j]
            # dh = dh_prev(t+1) · W_hh + direct part + this step's output gradient
            dh = dmm[b, j] + ddir[b, j] + dout_t[b, j] * mb
            dhm = dh * mb
            dz = dhm * (h_prev[b, j] - n) * z * (1.0 - z)  # dz̄ = dh ⊙ (h_prev − n) ⊙ z(1 − z)
            dn = dhm * (1.0 - z) * (1.0 - n * n)  # dn̄ = dh ⊙ (1 − z) ⊙ (1 − n²)
            dr = dn * hn[b, j] * r * (1.0 - r)  # dr̄ = dn̄ ⊙ gh_n ⊙ r(1 − r)
            dgi[b, j] = dr
            dgi[b, H + j] = dz
            dgi[b, 2 * H + j] = dn
            dgh[b, j] = dr
            dgh[b, H + j] = dz
            dgh[b, 2 * H + j] = dn * r  # the hidden side sees r ⊙ gh_n
            # ∂h/∂h_prev directly: z (and 1 for a finished sequence)
            ddir[b, j] = dhm * z + dh * (1.0 - mb) if use_mask else dh * z


@njit(**_INLINE)
def _classic_gates(gi, gh_rz, b_hh, h_prev, gates, rh):
    B, H = h_prev.shape
    for b in range(B):
        for j in range(H):
            r = _sigmoid(gi[b, j] + gh_rz[b, j] + b_hh[j])
            z = _sigmoid(gi[b, H + j] + gh_rz[b, H + j] + b_hh[H + j])
            gates[b, j] = r
            gates[b, H + j] = z
            rh[b, j] = r * h_prev[b, j]


@njit(**_INLINE)
def _classic_fwd(gi, gh_n, b_hh, h_prev, m, use_mask, h, gates):
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            z = gates[b, H + j]
            n = _tanh(gi[b, 2 * H + j] + gh_n[b, j] + b_hh[2 * H + j])
            hp = h_prev[b, j]
            h_new = hp + z * (n - hp)
            if use_mask:
                h_new = (h_new - hp) * m[b] + hp
            gates[b, 2 * H + j] = n
            h[b, j] = h_new


@njit(**_INLINE)
def _classic_bwd(dmm, ddir, dout_t, gates, h_prev, m, use_mask, dgi):
    B, H = dmm.shape
    for b in range(B):
        mb = m[b] if use_mask else 1.0
        for j in range(H):
            z = gates[b, H + j]
            n = gates[b, 2 * H + j]
            dh = dmm[b, j] + ddir[b, j] + dout_t[b, j] * mb
            dhm = dh * mb
            dgi[b, H + j] = dhm * (n - h_prev[b, j]) * z * (1.0 - z)  # dz̄ = dh ⊙ (h̃ − h_prev) ⊙ z(1 − z)
            dgi[b, 2 * H + j] = dhm * z * (1.0 - n * n)  # dn̄ = dh ⊙ z ⊙ (1 − h̃²)
            # ∂h/∂h_prev directly: 1 − z (and 1 for a finished sequence)
            ddir[b, j] = dhm * (1.0 - z) + dh * (1.0 - mb) if use_mask else dh * (1.0 - z)


@njit(**_INLINE)
def _classic_reset(drh, gates, h_prev, dgi, ddir):
    B, H = drh.shape
    for b in range(B):
        for j in range(H):
            r = gates[b, j]
            dgi[b, j] = drh[b, j] * h_prev[b, j] * r * (1.0 - r)  # dr̄ = drh ⊙ h_prev ⊙ r(1 − r)
            ddir[b, j] += drh[b, j] * r  # d h_prev += drh ⊙ r


# ---------------------------------------------------------------------------------------
# per-step kernels: same signatures and meaning as the NumPy twins in npgru.kernels
# ---------------------------------------------------------------------------------------
@njit(**_JIT)
def torch_step_forward(gi, gh, b_hh, h_prev, m, h, gates, hn):
    """Compiled :func:`npgru.kernels.torch_step_forward`."""
    if m is None:
        _torch_fwd(gi, gh, b_hh, h_prev, b_hh, False, h, gates, hn)
    else:
        _torch_fwd(gi, gh, b_hh, h_prev, m, True, h, gates, hn)


@njit(**_JIT)
def torch_step_backward(dmm, ddir, dout_t, gates, hn, h_prev, m, dgi, dgh):
    """Compiled :func:`npgru.kernels.torch_step_backward`."""
    if m is None:
        _torch_bwd(dmm, ddir, dout_t, gates, hn, h_prev, dout_t[0], False, dgi, dgh)
    else:
        _torch_bwd(dmm, ddir, dout_t, gates, hn, h_prev, m, True, dgi, dgh)


@njit(**_JIT)
def classic_step_gates(gi, gh_rz, b_hh, h_prev, gates, rh):
    """Compiled :func:`npgru.kernels.classic_step_gates`."""
    _classic_gates(gi, gh_rz, b_hh, h_prev, gates, rh)


@njit(**_JIT)
def classic_step_forward(gi, gh_n, b_hh, h_prev, m, h, gates):
    """Compiled :func:`npgru.kernels.classic_step_forward`."""
    if m is None:
        _classic_fwd(gi, gh_n, b_hh, h_prev, b_hh, False, h, gates)
    else:
        _classic_fwd(gi, gh_n, b_hh, h_prev, m, True, h, gates)


@njit(**_JIT)
def classic_step_backward(dmm, ddir, dout_t, gates, h_prev, m, dgi):
    """Compiled :func:`npgru.kernels.classic_step_backward`."""
    if m is None:
        _classic_bwd(dmm, ddir, dout_t, gates, h_prev, dout_t[0], False, dgi)
    else:
        _classic_bwd(dmm, ddir, dout_t, gates, h_prev, m, True, dgi)


@njit(**_JIT)
def classic_step_backward_reset(drh, gates, h_prev, dgi, ddir):
    """Compiled :func:`npgru.kernels.classic_step_backward_reset`."""
    _classic_reset(drh, gates, h_prev, dgi, ddir)


# ---------------------------------------------------------------------------------------
# whole-sequence kernels: the time loop and the (small) hidden GEMMs in compiled code
# ---------------------------------------------------------------------------------------
def _mask_or_empty(mask, like):
    """The compiled loops take a (0, B) array for "no mask": one specialisation, not two."""
    if mask is None:
        return np.empty((0, like.shape[1]), dtype=like.dtype)
    return mask


@njit(**_JIT)
def _torch_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    T, B, H3 = gi.shape
    use_mask = mask.shape[0] > 0
    wt = np.ascontiguousarray(w_hh.T)  # (H, 3H): axpy rows for the hidden GEMM
    gh = np.empty((B, H3), dtype=hs.dtype)
    for t in range(T):
        _mm_t(hs[t], wt, 0, gh)
        m = mask[t] if use_mask else b_hh
        _torch_fwd(gi[t], gh, b_hh, hs[t], m, use_mask, hs[t + 1], gates[t], hid[t])


def torch_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    """Compiled :func:`npgru.kernels.torch_seq_forward` (small shapes: the GEMM is a loop)."""
    _torch_seq_forward(gi, w_hh, b_hh, _mask_or_empty(mask, gi[0]), hs, gates, hid)


@njit(**_JIT)
def _torch_seq_backward(dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh):
    T, B, H = dout.shape
    use_mask = mask.shape[0] > 0
    dmm = np.zeros((B, H), dtype=dout.dtype)
    ddir = dh_n.copy()
    for t in range(T - 1, -1, -1):
        m = mask[t] if use_mask else dout[t, 0]
        _torch_bwd(dmm, ddir, dout[t], gates[t], hid[t], hs[t], m, use_mask, dgi[t], dgh[t])
        _mm_rows(dgh[t], w_hh, 0, dmm)  # dh_prev = direct + dgh · W_hh
    return dmm + ddir


def torch_seq_backward(dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh):
    """Compiled :func:`npgru.kernels.torch_seq_backward`."""
    return _torch_seq_backward(
        dout, dh_n, gates, hid, hs, _mask_or_empty(mask, dout[0]), w_hh, dgi, dgh
    )


@njit(**_JIT)
def _classic_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    T, B, H3 = gi.shape
    H = H3 // 3
    use_mask = mask.shape[0] > 0
    wt = np.ascontiguousarray(w_hh.T)  # (H, 3H): columns [U_r, U_z | U_n] transposed
    gh_rz = np.empty((B, 2 * H), dtype=hs.dtype)
    gh_n = np.empty((B, H), dtype=hs.dtype)
    for t in range(T):
        _mm_t(hs[t], wt, 0, gh_rz)
        _classic_gates(gi[t], gh_rz, b_hh, hs[t], gates[t], hid[t])
        _mm_t(hid[t], wt, 2 * H, gh_n)  # U_n (r ⊙ h_prev)
        m = mask[t] if use_mask else b_hh
        _classic_fwd(gi[t], gh_n, b_hh, hs[t], m, use_mask, hs[t + 1], gates[t])


def classic_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    """Compiled :func:`npgru.kernels.classic_seq_forward`."""
    _classic_seq_forward(gi, w_hh, b_hh, _mask_or_empty(mask, gi[0]), hs, gates, hid)


@njit(**_JIT)
def _classic_seq_backward(dout, dh_n, gates, hid, hs, mask, w_hh, dgi):
    T, B, H = dout.shape
    use_mask = mask.shape[0] > 0
    dmm = np.zeros((B, H), dtype=dout.dtype)
    ddir = dh_n.copy()
    drh = np.empty((B, H), dtype=dout.dtype)
    for t in range(T - 1, -1, -1):
        m = mask[t] if use_mask else dout[t, 0]
        g = dgi[t]
        _classic_bwd(dmm, ddir, dout[t], gates[t], hs[t], m, use_mask, g)
        _mm_rows(g[:, 2 * H :], w_hh, 2 * H, drh)  # d(r ⊙ h_prev) = dn̄ · U_n
        _classic_reset(drh, gates[t], hs[t], g, ddir)
        _mm_rows(g[:, : 2 * H], w_hh, 0, dmm)  # dh_prev += [dr̄, dz̄] · U_rz
    return dmm + ddir


def classic_seq_backward(dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh=None):
    """Compiled :func:`npgru.kernels.classic_seq_backward` (``dgh`` unused, as in the twin)."""
    return _classic_seq_backward(
        dout, dh_n, gates, hid, hs, _mask_or_empty(mask, dout[0]), w_hh, dgi
    )


# ---------------------------------------------------------------------------------------
# streaming cells: one step of one layer, nothing saved for backward
# ---------------------------------------------------------------------------------------
@njit(**_INLINE)
def _mm_nt(a, w, r0, bias, out):
    """``out = a @ w[r0:r0+W].T + bias[r0:r0+W]``: dot products along contiguous weight rows."""
    B, K = a.shape
    W = out.shape[1]
    for b in range(B):
        for j in range(W):
            s = 0.0
            for k in range(K):
                s += a[b, k] * w[r0 + j, k]
            out[b, j] = s + bias[r0 + j]


@njit(**_JIT_DOT)
def torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """Compiled :func:`npgru.kernels.torch_cell` (small shapes; both GEMMs as loops)."""
    gi, gh = work[0], work[1]
    _mm_nt(x, w_ih, 0, b_ih, gi)
    _mm_nt(h_prev, w_hh, 0, b_hh, gh)
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            r = _sigmoid(gi[b, j] + gh[b, j])
            z = _sigmoid(gi[b, H + j] + gh[b, H + j])
            n = _tanh(gi[b, 2 * H + j] + r * gh[b, 2 * H + j])
            h[b, j] = n + z * (h_prev[b, j] - n)


@njit(**_JIT_DOT)
def classic_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """Compiled :func:`npgru.kernels.classic_cell`."""
    B, H = h.shape
    gi, g = work[0], work[1]
    _mm_nt(x, w_ih, 0, b_ih, gi)
    gh_rz = g[:, : 2 * H]
    _mm_nt(h_prev, w_hh, 0, b_hh, gh_rz)
    rh = work[2][:, :H]
    for b in range(B):
        for j in range(H):
            r = _sigmoid(gi[b, j] + gh_rz[b, j])
            g[b, H + j] = _sigmoid(gi[b, H + j] + gh_rz[b, H + j])  # keep z
            rh[b, j] = r * h_prev[b, j]
    gh_n = work[2][:, H : 2 * H]
    _mm_nt(rh, w_hh, 2 * H, b_hh, gh_n)
    for b in range(B):
        for j in range(H):
            z = g[b, H + j]
            n = _tanh(gi[b, 2 * H + j] + gh_n[b, j])
            hp = h_prev[b, j]
            h[b, j] = hp + z * (n - hp)


# the twins' loop drivers, re-exported so gru.py can run a Python time loop with BLAS GEMMs
# and the compiled step kernels above (large shapes)
torch_forward_loop = _twins.torch_forward_loop
torch_backward_loop = _twins.torch_backward_loop
classic_forward_loop = _twins.classic_forward_loop
classic_backward_loop = _twins.classic_backward_loop
