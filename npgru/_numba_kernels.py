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
  arithmetic (range reduction, a polynomial for ``expm1``, an exponent built by a bit cast)
  so LLVM vectorises it, in the argument's precision: float64 ≈0.6 ns an element within
  2 ulp; float32 ≈0.2 ns within 1.5 ulp (of float32).
- **Flags.** ``error_model="numpy"`` (a division by zero gives inf instead of raising, which
  would stop vectorisation) and ``fastmath={"contract"}`` (fused multiply-add; changes results
  by rounding only). Only the small matmul :func:`_dot`, compiled on its own, also allows
  ``"reassoc"``, so its dot products vectorise. No ``nnan``/``ninf``: NaN must survive.
- **Aliasing.** LLVM does not vectorise a loop that reads one part of an array and writes
  another part of the same array, so the element-wise helpers are short loops that each write
  one array and read others (see the note above them).
- **Specialisations.** One per dtype, plus ``m is None`` for the per-step kernels; the
  whole-sequence kernels take an empty mask for "no mask" (:func:`_mask_or_empty`), so a test
  run compiles a few dozen small functions (seconds, then cached).

Kernels never check shapes: :func:`npgru.gru.gru_forward` / ``gru_backward`` and the
recurrent layers validate every shape and dtype first, so nothing can index out of bounds.
The kernels of each cell are gathered in a :class:`~npgru.cell.CellKernels` table
(``TABLES``), checked at import against the NumPy twins' tables.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from . import kernels as _twins
from .cell import check_tables

COMPILED = True  # npgru.recurrence sends small shapes to the whole-sequence kernels only when set

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
_JIT_DOT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy",
                                fastmath={"contract", "reassoc"})
_INLINE: dict[str, Any] = dict(inline="always", error_model="numpy", fastmath={"contract"})

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
def _tanh64(x):
    """``tanh(x)`` in float64 arithmetic that LLVM can vectorise (≤ 2 ulp).

    ``tanh|x| = −e/(e + 2)`` with ``e = expm1(−2|x|)``; ``expm1`` by ``y = k·ln2 + r``,
    ``expm1(y) = 2^k·expm1(r) + (2^k − 1)`` — no cancellation near 0, where ``k = 0``.
    ``|x|`` is clamped at 20, where float64 ``tanh`` is already exactly 1; NaN propagates.
    """
    a = abs(x)
    a = np.minimum(a, 20.0)  # NaN stays NaN
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


@intrinsic
def _pow2_f32(typingctx, k):
    """``2.0**k`` as float32 for an int32 ``k`` in the normal range."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return sig, codegen


# float32 constants (a float64 literal would promote the whole computation to float64)
_F = np.float32
_LN2_HI_F, _LN2_LO_F = _F(0.693145751953125), _F(1.428606765330187e-06)
_INV_LN2_F = _F(_INV_LN2)
(_F2, _F3, _F4, _F5, _F6, _F7, _F8) = (_F(1.0 / math.factorial(n)) for n in range(2, 9))
_HALF_F, _ONE_F, _TWO_F, _NINE_F = _F(0.5), _F(1.0), _F(2.0), _F(9.0)


@njit(**_INLINE)
def _tanh32(x):
    """The same algorithm in float32 (16 lanes per AVX-512 register; ≤ 1.5 ulp of float32):
    ``|x|`` clamped at 9, degree-8 polynomial. ≈3× faster than :func:`_tanh64`."""
    a = abs(x)
    a = np.minimum(a, _NINE_F)
    y = -_TWO_F * a
    k = -np.int32(_HALF_F - y * _INV_LN2_F)
    kf = np.float32(k)
    r = (y - kf * _LN2_HI_F) - kf * _LN2_LO_F
    p = _F8
    p = p * r + _F7
    p = p * r + _F6
    p = p * r + _F5
    p = p * r + _F4
    p = p * r + _F3
    p = p * r + _F2
    em_r = r + r * r * p
    s = _pow2_f32(k)
    em = s * em_r + (s - _ONE_F)
    return math.copysign(-em / (em + _TWO_F), x)


def _tanh(x):  # pragma: no cover - typed by the overload below, only called compiled
    """``tanh`` in the argument's own precision (float32 or float64), vectorisable."""
    raise NotImplementedError


@overload(_tanh, inline="always")
def _tanh_impl(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: _tanh64(x)


def _sigmoid(x):  # pragma: no cover - typed by the overload below, only called compiled
    """σ(x) = (1 + tanh(x/2)) / 2, the same formula as the NumPy twin: no overflow."""
    raise NotImplementedError


@overload(_sigmoid, inline="always")
def _sigmoid_impl(x):
    if x == types.float32:
        return lambda x: _HALF_F + _HALF_F * _tanh32(_HALF_F * x)
    return lambda x: 0.5 + 0.5 * _tanh64(0.5 * x)


@njit(cache=True, nogil=True, error_model="numpy")
def tanh(x, out):
    """Vectorised :func:`_tanh` over a 1-D array (exposed for tests of its accuracy)."""
    for i in range(x.shape[0]):
        out[i] = _tanh(x[i])


# ---------------------------------------------------------------------------------------
# small matrix products as loops (whole-sequence and cell kernels only)
# ---------------------------------------------------------------------------------------
@njit(**_JIT_DOT)
def _dot(a, w, r0, c0, out):
    """``out[b, j] = Σ_k a[b, k] · w[r0 + j, c0 + k]``: ``a @ w[r0:, c0:].T`` for few rows.

    Dot products along contiguous rows of ``a`` and ``w``, register-blocked: five rows of
    ``a`` by four weight rows at a time (twenty accumulators), so each weight element loaded
    feeds five products and each element of ``a`` four; the rows left over take four weight
    rows at a time. Compiled on its own with ``reassoc`` (which the reductions need to
    vectorise) so the gate math that calls it keeps exact evaluation order.

    Thread CPU time against one-thread OpenBLAS, both called from Python (AMD EPYC, AVX-512,
    float32): 1.4× faster at 10×256·256×768 and 1.9× at 10×768·768×256, where OpenBLAS spends
    its time packing the weight matrix it multiplies ten rows by; 1.3× at 1×64·64×192. Called
    from compiled loops it has no call cost either.
    """
    B, K = a.shape
    W = out.shape[1]
    zero = out.dtype.type(0)
    b = 0
    while b + 5 <= B:
        a0, a1, a2, a3, a4 = a[b], a[b + 1], a[b + 2], a[b + 3], a[b + 4]
        j = 0
        while j + 4 <= W:
            w0, w1 = _row(w, r0 + j, c0, K), _row(w, r0 + j + 1, c0, K)
            w2, w3 = _row(w, r0 + j + 2, c0, K), _row(w, r0 + j + 3, c0, K)
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = zero
            s22 = s23 = s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = zero
            for k in range(K):
                s00 += a0[k] * w0[k]
                s01 += a0[k] * w1[k]
                s02 += a0[k] * w2[k]
                s03 += a0[k] * w3[k]
                s10 += a1[k] * w0[k]
                s11 += a1[k] * w1[k]
                s12 += a1[k] * w2[k]
                s13 += a1[k] * w3[k]
                s20 += a2[k] * w0[k]
                s21 += a2[k] * w1[k]
                s22 += a2[k] * w2[k]
                s23 += a2[k] * w3[k]
                s30 += a3[k] * w0[k]
                s31 += a3[k] * w1[k]
                s32 += a3[k] * w2[k]
                s33 += a3[k] * w3[k]
                s40 += a4[k] * w0[k]
                s41 += a4[k] * w1[k]
                s42 += a4[k] * w2[k]
                s43 += a4[k] * w3[k]
            out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s00, s01, s02, s03
            out[b + 1, j], out[b + 1, j + 1], out[b + 1, j + 2], out[b + 1, j + 3] = s10, s11, s12, s13
            out[b + 2, j], out[b + 2, j + 1], out[b + 2, j + 2], out[b + 2, j + 3] = s20, s21, s22, s23
            out[b + 3, j], out[b + 3, j + 1], out[b + 3, j + 2], out[b + 3, j + 3] = s30, s31, s32, s33
            out[b + 4, j], out[b + 4, j + 1], out[b + 4, j + 2], out[b + 4, j + 3] = s40, s41, s42, s43
            j += 4
        for i in range(b, b + 5):  # the weight rows left over
            for jj in range(j, W):
                out[i, jj] = _dot1(a[i], _row(w, r0 + jj, c0, K), zero)
        b += 5
    for i in range(b, B):
        ai = a[i]
        j = 0
        while j + 4 <= W:
            w0, w1 = _row(w, r0 + j, c0, K), _row(w, r0 + j + 1, c0, K)
            w2, w3 = _row(w, r0 + j + 2, c0, K), _row(w, r0 + j + 3, c0, K)
            s0 = s1 = s2 = s3 = zero
            for k in range(K):
                s0 += ai[k] * w0[k]
                s1 += ai[k] * w1[k]
                s2 += ai[k] * w2[k]
                s3 += ai[k] * w3[k]
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s0, s1, s2, s3
            j += 4
        for jj in range(j, W):
            out[i, jj] = _dot1(ai, _row(w, r0 + jj, c0, K), zero)


@njit(inline="always")
def _row(w, r, c0, K):
    """``w[r, c0:c0 + K]`` as a contiguous 1-D view: indexed by a plain ``k`` in the loops,
    where ``w[r, c0 + k]`` (an index that might be negative, for all Numba knows) would be
    checked for wrap-around at every step and not vectorise (≈4× slower)."""
    return w[r][c0 : c0 + K]


@njit(inline="always", error_model="numpy", fastmath={"contract", "reassoc"})
def _dot1(x, y, zero):
    s = zero
    for k in range(x.shape[0]):
        s += x[k] * y[k]
    return s


# ---------------------------------------------------------------------------------------
# element-wise step math, one helper per kernel; `use_mask` False ignores `m`.
#
# Written as several short loops per row, each writing one array region and reading only
# *other* arrays: LLVM will not vectorise a loop that reads one part of an array and writes
# another part of the same array (the distance between them is unknown at compile time),
# and a scalar `_tanh` is ≈25 ns. So intermediate values go through the scratch rows
# `s1`/`s2` (B, H), and values needed twice are recomputed instead of read back. Constants
# are of the arrays' dtype (`one`): a float64 literal would take float32 arithmetic to float64
# (half as many lanes a vector, and conversions).
# ---------------------------------------------------------------------------------------
@njit(**_INLINE)
def _torch_fwd(gi, gh, b_hh, h_prev, m, use_mask, h, gates, hn, s1, s2):
    B, H = h.shape
    one = h.dtype.type(1)
    for b in range(B):
        for j in range(2 * H):  # r, z
            gates[b, j] = _sigmoid(gi[b, j] + gh[b, j] + b_hh[j])
        for j in range(H):  # gh_n + b_hn, kept for backward
            hn[b, j] = gh[b, 2 * H + j] + b_hh[2 * H + j]
        for j in range(H):  # n = tanh(gi_n + r ⊙ (gh_n + b_hn))
            s1[b, j] = _tanh(gi[b, 2 * H + j] + gates[b, j] * hn[b, j])
        mb = m[b] if use_mask else one
        for j in range(H):  # h = n + z ⊙ (h_prev − n)
            n = s1[b, j]
            hp = h_prev[b, j]
            h_new = n + gates[b, H + j] * (hp - n)
            if use_mask:
                h_new = (h_new - hp) * mb + hp  # a finished sequence keeps its state
            s2[b, j] = h_new
        for j in range(H):
            gates[b, 2 * H + j] = s1[b, j]
        for j in range(H):
            h[b, j] = s2[b, j]


@njit(**_INLINE)
def _torch_bwd(dmm, ddir, dout_t, gates, hn, h_prev, m, use_mask, dgi, dgh, s1):
    B, H = dmm.shape
    one = dmm.dtype.type(1)
    for b in range(B):
        mb = m[b] if use_mask else one
        for j in range(H):  # dh = dh_prev(t+1) · W_hh + direct part + this step's output gradient
            s1[b, j] = dmm[b, j] + ddir[b, j] + dout_t[b, j] * mb
        for j in range(H):  # dz̄ = dh ⊙ (h_prev − n) ⊙ z(1 − z)
            z = gates[b, H + j]
            dgi[b, H + j] = s1[b, j] * mb * (h_prev[b, j] - gates[b, 2 * H + j]) * z * (one - z)
        for j in range(H):  # dn̄ = dh ⊙ (1 − z) ⊙ (1 − n²)
            n = gates[b, 2 * H + j]
            dgi[b, 2 * H + j] = s1[b, j] * mb * (one - gates[b, H + j]) * (one - n * n)
        for j in range(H):  # dr̄ = dn̄ ⊙ gh_n ⊙ r(1 − r)  (dn̄ recomputed, see above)
            n = gates[b, 2 * H + j]
            r = gates[b, j]
            dn = s1[b, j] * mb * (one - gates[b, H + j]) * (one - n * n)
            dgi[b, j] = dn * hn[b, j] * r * (one - r)
        for j in range(2 * H):
            dgh[b, j] = dgi[b, j]
        for j in range(H):  # the hidden side sees r ⊙ gh_n: its candidate block is dn̄ ⊙ r
            dgh[b, 2 * H + j] = dgi[b, 2 * H + j] * gates[b, j]
        for j in range(H):  # ∂h/∂h_prev directly: z (and 1 for a finished sequence)
            dh = s1[b, j]
            z = gates[b, H + j]
            ddir[b, j] = dh * mb * z + dh * (one - mb) if use_mask else dh * z


@njit(**_INLINE)
def _classic_gates(gi, gh_rz, b_hh, h_prev, gates, rh):
    B, H = h_prev.shape
    for b in range(B):
        for j in range(2 * H):  # r, z
            gates[b, j] = _sigmoid(gi[b, j] + gh_rz[b, j] + b_hh[j])
        for j in range(H):
            rh[b, j] = gates[b, j] * h_prev[b, j]


@njit(**_INLINE)
def _classic_fwd(gi, gh_n, b_hh, h_prev, m, use_mask, h, gates, s1, s2):
    B, H = h.shape
    one = h.dtype.type(1)
    for b in range(B):
        for j in range(H):  # h̃ = tanh(gi_n + U_n (r ⊙ h_prev) + b_hn)
            s1[b, j] = _tanh(gi[b, 2 * H + j] + gh_n[b, j] + b_hh[2 * H + j])
        mb = m[b] if use_mask else one
        for j in range(H):  # h = h_prev + z ⊙ (h̃ − h_prev)
            hp = h_prev[b, j]
            h_new = hp + gates[b, H + j] * (s1[b, j] - hp)
            if use_mask:
                h_new = (h_new - hp) * mb + hp
            s2[b, j] = h_new
        for j in range(H):
            gates[b, 2 * H + j] = s1[b, j]
        for j in range(H):
            h[b, j] = s2[b, j]


@njit(**_INLINE)
def _classic_bwd(dmm, ddir, dout_t, gates, h_prev, m, use_mask, dgi, s1):
    B, H = dmm.shape
    one = dmm.dtype.type(1)
    for b in range(B):
        mb = m[b] if use_mask else one
        for j in range(H):
            s1[b, j] = dmm[b, j] + ddir[b, j] + dout_t[b, j] * mb
        for j in range(H):  # dz̄ = dh ⊙ (h̃ − h_prev) ⊙ z(1 − z)
            z = gates[b, H + j]
            dgi[b, H + j] = s1[b, j] * mb * (gates[b, 2 * H + j] - h_prev[b, j]) * z * (one - z)
        for j in range(H):  # dn̄ = dh ⊙ z ⊙ (1 − h̃²)
            n = gates[b, 2 * H + j]
            dgi[b, 2 * H + j] = s1[b, j] * mb * gates[b, H + j] * (one - n * n)
        for j in range(H):  # ∂h/∂h_prev directly: 1 − z (and 1 for a finished sequence)
            dh = s1[b, j]
            z = gates[b, H + j]
            ddir[b, j] = dh * mb * (one - z) + dh * (one - mb) if use_mask else dh * (one - z)


@njit(**_INLINE)
def _classic_reset(drh, gates, h_prev, dgi, ddir):
    B, H = drh.shape
    one = drh.dtype.type(1)
    for b in range(B):
        for j in range(H):  # dr̄ = drh ⊙ h_prev ⊙ r(1 − r)
            r = gates[b, j]
            dgi[b, j] = drh[b, j] * h_prev[b, j] * r * (one - r)
        for j in range(H):  # d h_prev += drh ⊙ r
            ddir[b, j] += drh[b, j] * gates[b, j]


# ---------------------------------------------------------------------------------------
# per-step kernels: same signatures and meaning as the NumPy twins in npgru.kernels
# ---------------------------------------------------------------------------------------
@njit(**_JIT)
def torch_step_forward(gi, gh, b_hh, h_prev, m, h, gates, hn):
    """Compiled :func:`npgru.kernels.torch_step_forward`."""
    s1, s2 = np.empty_like(h), np.empty_like(h)
    if m is None:
        _torch_fwd(gi, gh, b_hh, h_prev, b_hh, False, h, gates, hn, s1, s2)
    else:
        _torch_fwd(gi, gh, b_hh, h_prev, m, True, h, gates, hn, s1, s2)


@njit(**_JIT)
def torch_step_backward(dmm, ddir, dout_t, gates, hn, h_prev, m, dgi, dgh):
    """Compiled :func:`npgru.kernels.torch_step_backward`."""
    s1 = np.empty_like(dmm)
    if m is None:
        _torch_bwd(dmm, ddir, dout_t, gates, hn, h_prev, dout_t[0], False, dgi, dgh, s1)
    else:
        _torch_bwd(dmm, ddir, dout_t, gates, hn, h_prev, m, True, dgi, dgh, s1)


@njit(**_JIT)
def classic_step_gates(gi, gh_rz, b_hh, h_prev, gates, rh):
    """Compiled :func:`npgru.kernels.classic_step_gates`."""
    _classic_gates(gi, gh_rz, b_hh, h_prev, gates, rh)


@njit(**_JIT)
def classic_step_forward(gi, gh_n, b_hh, h_prev, m, h, gates):
    """Compiled :func:`npgru.kernels.classic_step_forward`."""
    s1, s2 = np.empty_like(h), np.empty_like(h)
    if m is None:
        _classic_fwd(gi, gh_n, b_hh, h_prev, b_hh, False, h, gates, s1, s2)
    else:
        _classic_fwd(gi, gh_n, b_hh, h_prev, m, True, h, gates, s1, s2)


@njit(**_JIT)
def classic_step_backward(dmm, ddir, dout_t, gates, h_prev, m, dgi):
    """Compiled :func:`npgru.kernels.classic_step_backward`."""
    s1 = np.empty_like(dmm)
    if m is None:
        _classic_bwd(dmm, ddir, dout_t, gates, h_prev, dout_t[0], False, dgi, s1)
    else:
        _classic_bwd(dmm, ddir, dout_t, gates, h_prev, m, True, dgi, s1)


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
    H = H3 // 3
    use_mask = mask.shape[0] > 0
    gh = np.empty((B, H3), dtype=hs.dtype)
    s1, s2 = np.empty((B, H), dtype=hs.dtype), np.empty((B, H), dtype=hs.dtype)
    for t in range(T):
        _dot(hs[t], w_hh, 0, 0, gh)  # gh = h_prev · W_hhᵀ
        m = mask[t] if use_mask else b_hh
        _torch_fwd(gi[t], gh, b_hh, hs[t], m, use_mask, hs[t + 1], gates[t], hid[t], s1, s2)


def torch_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    """Compiled :func:`npgru.kernels.torch_forward_loop` (small shapes: the GEMM is a loop)."""
    _torch_seq_forward(gi, w_hh, b_hh, _mask_or_empty(mask, gi[0]), hs, gates, hid)


@njit(**_JIT)
def _torch_seq_backward(dout, dh_n, hs, gates, hid, mask, w_hh, dgi, dgh_n):
    T, B, H = dout.shape
    use_mask = mask.shape[0] > 0
    dmm = np.zeros((B, H), dtype=dout.dtype)
    ddir = dh_n.copy()
    s1 = np.empty((B, H), dtype=dout.dtype)
    dgh = np.empty((B, 3 * H), dtype=dout.dtype)  # this step's full hidden-side gradient
    wt = np.ascontiguousarray(w_hh.T)  # (H, 3H): dgh · W_hh as dot products along its rows
    for t in range(T - 1, -1, -1):
        m = mask[t] if use_mask else dout[t, 0]
        _torch_bwd(dmm, ddir, dout[t], gates[t], hid[t], hs[t], m, use_mask, dgi[t], dgh, s1)
        for b in range(B):
            for j in range(H):
                dgh_n[t, b, j] = dgh[b, 2 * H + j]
        _dot(dgh, wt, 0, 0, dmm)  # dh_prev = direct + dgh · W_hh
    return dmm + ddir


def torch_seq_backward(dout, dh_n, hs, gates, hid, mask, w_hh, dgi, dgh_n):
    """Compiled :func:`npgru.kernels.torch_backward_loop`; returns ``dh0``."""
    return _torch_seq_backward(
        dout, dh_n, hs, gates, hid, _mask_or_empty(mask, dout[0]), w_hh, dgi, dgh_n
    )


@njit(**_JIT)
def _classic_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    T, B, H3 = gi.shape
    H = H3 // 3
    use_mask = mask.shape[0] > 0
    gh_rz = np.empty((B, 2 * H), dtype=hs.dtype)
    gh_n = np.empty((B, H), dtype=hs.dtype)
    s1, s2 = np.empty((B, H), dtype=hs.dtype), np.empty((B, H), dtype=hs.dtype)
    for t in range(T):
        _dot(hs[t], w_hh, 0, 0, gh_rz)  # [U_r; U_z] h_prev
        _classic_gates(gi[t], gh_rz, b_hh, hs[t], gates[t], hid[t])
        _dot(hid[t], w_hh, 2 * H, 0, gh_n)  # U_n (r ⊙ h_prev)
        m = mask[t] if use_mask else b_hh
        _classic_fwd(gi[t], gh_n, b_hh, hs[t], m, use_mask, hs[t + 1], gates[t], s1, s2)


def classic_seq_forward(gi, w_hh, b_hh, mask, hs, gates, hid):
    """Compiled :func:`npgru.kernels.classic_forward_loop`."""
    _classic_seq_forward(gi, w_hh, b_hh, _mask_or_empty(mask, gi[0]), hs, gates, hid)


@njit(**_JIT)
def _classic_seq_backward(dout, dh_n, hs, gates, hid, mask, w_hh, dgi):
    T, B, H = dout.shape
    use_mask = mask.shape[0] > 0
    dmm = np.zeros((B, H), dtype=dout.dtype)
    ddir = dh_n.copy()
    drh = np.empty((B, H), dtype=dout.dtype)
    s1 = np.empty((B, H), dtype=dout.dtype)
    wt = np.ascontiguousarray(w_hh.T)  # (H, 3H): columns [U_rᵀ U_zᵀ | U_nᵀ]
    for t in range(T - 1, -1, -1):
        m = mask[t] if use_mask else dout[t, 0]
        g = dgi[t]
        _classic_bwd(dmm, ddir, dout[t], gates[t], hs[t], m, use_mask, g, s1)
        _dot(g[:, 2 * H :], wt, 0, 2 * H, drh)  # d(r ⊙ h_prev) = dn̄ · U_n
        _classic_reset(drh, gates[t], hs[t], g, ddir)
        _dot(g[:, : 2 * H], wt, 0, 0, dmm)  # dh_prev += [dr̄, dz̄] · U_rz
    return dmm + ddir


def classic_seq_backward(dout, dh_n, hs, gates, hid, mask, w_hh, dgi, dgh=None):
    """Compiled :func:`npgru.kernels.classic_backward_loop` (``dgh`` unused, as in the twin)."""
    return _classic_seq_backward(
        dout, dh_n, hs, gates, hid, _mask_or_empty(mask, dout[0]), w_hh, dgi
    )


# ---------------------------------------------------------------------------------------
# streaming cells: one step of one layer, nothing saved for backward
# ---------------------------------------------------------------------------------------
_SMALL_K = 16  # below this many inputs, a dot product is too short to vectorise


@njit(**_INLINE)
def _input_proj(x, w_ih, gi, wbuf):
    """``gi = x · W_ihᵀ``. For a short input (D < 16: sensors, characters) the dot products
    are too short to vectorise, so ``W_ih`` is transposed into ``wbuf`` (cheap: 3H·D) and
    the product runs as axpys along its contiguous rows instead (≈10× faster at D = 4)."""
    B, D = x.shape
    W = gi.shape[1]
    if D >= _SMALL_K or wbuf.shape[0] < D * W:
        _dot(x, w_ih, 0, 0, gi)
        return
    wt = wbuf[: D * W].reshape((D, W))
    for j in range(W):
        for k in range(D):
            wt[k, j] = w_ih[j, k]
    for b in range(B):
        for j in range(W):
            gi[b, j] = 0
        for k in range(D):
            xk = x[b, k]
            for j in range(W):
                gi[b, j] += xk * wt[k, j]


@njit(**_INLINE)
def _torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work, wbuf):
    gi, gh = work[0], work[1]
    _input_proj(x, w_ih, gi, wbuf)
    _dot(h_prev, w_hh, 0, 0, gh)
    B, H = h.shape
    for b in range(B):
        for j in range(H):  # one loop that writes only h: it vectorises
            r = _sigmoid(gi[b, j] + b_ih[j] + gh[b, j] + b_hh[j])
            z = _sigmoid(gi[b, H + j] + b_ih[H + j] + gh[b, H + j] + b_hh[H + j])
            n = _tanh(gi[b, 2 * H + j] + b_ih[2 * H + j] + r * (gh[b, 2 * H + j] + b_hh[2 * H + j]))
            h[b, j] = n + z * (h_prev[b, j] - n)


@njit(**_INLINE)
def _classic_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work, wbuf):
    B, H = h.shape
    gi, g = work[0], work[1]
    _input_proj(x, w_ih, gi, wbuf)
    gh_rz = g[:, : 2 * H]
    _dot(h_prev, w_hh, 0, 0, gh_rz)
    for b in range(B):
        for j in range(H):  # rh = r ⊙ h_prev, kept in h until the last loop
            h[b, j] = _sigmoid(gi[b, j] + b_ih[j] + gh_rz[b, j] + b_hh[j]) * h_prev[b, j]
    gh_n = work[2][:, :H]
    _dot(h, w_hh, 2 * H, 0, gh_n)
    for b in range(B):
        for j in range(H):
            z = _sigmoid(gi[b, H + j] + b_ih[H + j] + gh_rz[b, H + j] + b_hh[H + j])
            n = _tanh(gi[b, 2 * H + j] + b_ih[2 * H + j] + gh_n[b, j] + b_hh[2 * H + j])
            hp = h_prev[b, j]
            h[b, j] = hp + z * (n - hp)


@njit(**_JIT)
def torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """Compiled :func:`npgru.kernels.torch_cell` (small shapes; both GEMMs as loops).

    ``h`` must not overlap ``h_prev`` or ``work``.
    """
    _torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work, b_ih[:0])


@njit(**_JIT)
def classic_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """Compiled :func:`npgru.kernels.classic_cell`; ``r ⊙ h_prev`` passes through ``h``."""
    _classic_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work, b_ih[:0])


@njit(**_INLINE)
def _finite(a, b):
    """True if neither array holds NaN or Inf (``v − v`` is 0 exactly when ``v`` is finite;
    summed so the loop vectorises)."""
    acc = a.dtype.type(0)
    af, bf = a.reshape(-1), b.reshape(-1)
    for i in range(af.shape[0]):
        acc += af[i] - af[i]
    for i in range(bf.shape[0]):
        acc += bf[i] - bf[i]
    return acc == 0


@njit(**_INLINE)
def _layer_weights(flat, offs, k, G, H, zeros):
    """Compiled :func:`npgru.kernels.layer_weights` for layer ``k``."""
    D = offs[k, 4]
    w_ih = flat[offs[k, 0] : offs[k, 0] + G * H * D].reshape((G * H, D))
    w_hh = flat[offs[k, 1] : offs[k, 1] + G * H * H].reshape((G * H, H))
    b_ih = flat[offs[k, 2] : offs[k, 2] + G * H] if offs[k, 2] >= 0 else zeros
    b_hh = flat[offs[k, 3] : offs[k, 3] + G * H] if offs[k, 3] >= 0 else zeros
    return w_ih, w_hh, b_ih, b_hh


@njit(**_INLINE)
def _stream(x, h, flat, offs, out, work, hbuf, wbuf, classic):
    L, B, H = h.shape
    if not _finite(x, h):
        return False
    zeros = work[3, 0]  # never written: the bias of a layer without bias
    inp = x
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = _layer_weights(flat, offs, k, 3, H, zeros)
        # into hbuf first: out may be h itself, and h[k] is read until the cell is done
        if classic:
            _classic_cell(inp, h[k], w_ih, w_hh, b_ih, b_hh, hbuf, work, wbuf)
        else:
            _torch_cell(inp, h[k], w_ih, w_hh, b_ih, b_hh, hbuf, work, wbuf)
        for b in range(B):
            for j in range(H):
                out[k, b, j] = hbuf[b, j]
        inp = out[k]
    return True


@njit(**_JIT)
def stream_step(x, h, flat, offs, out, work, hbuf, wbuf):
    """Compiled :func:`npgru.kernels.gru_stream_step`: every layer of one step in one call."""
    return _stream(x, h, flat, offs, out, work, hbuf, wbuf, False)


@njit(**_JIT)
def classic_stream_step(x, h, flat, offs, out, work, hbuf, wbuf):
    """Compiled :func:`npgru.kernels.gru_stream_step` for the classic form."""
    return _stream(x, h, flat, offs, out, work, hbuf, wbuf, True)


# ---------------------------------------------------------------------------------------
# LSTM: gates [i, f, g, o]; c = f ⊙ c_prev + i ⊙ g, h = o ⊙ tanh(c)
# ---------------------------------------------------------------------------------------
@njit(**_INLINE)
def _lstm_fwd(gi, gh, b_hh, h_prev, c_prev, m, use_mask, h, c, gates, s1, s2):
    B, H = h.shape
    one = h.dtype.type(1)
    for b in range(B):
        for j in range(2 * H):  # i, f
            gates[b, j] = _sigmoid(gi[b, j] + gh[b, j] + b_hh[j])
        for j in range(2 * H, 3 * H):  # g
            gates[b, j] = _tanh(gi[b, j] + gh[b, j] + b_hh[j])
        for j in range(3 * H, 4 * H):  # o
            gates[b, j] = _sigmoid(gi[b, j] + gh[b, j] + b_hh[j])
        mb = m[b] if use_mask else one
        for j in range(H):  # c = f ⊙ c_prev + i ⊙ g
            cp = c_prev[b, j]
            c_new = gates[b, H + j] * cp + gates[b, j] * gates[b, 2 * H + j]
            if use_mask:
                c_new = (c_new - cp) * mb + cp  # a finished sequence keeps its state
            s1[b, j] = c_new
        for j in range(H):  # h = o ⊙ tanh(c)
            hp = h_prev[b, j]
            h_new = gates[b, 3 * H + j] * _tanh(s1[b, j])
            if use_mask:
                h_new = (h_new - hp) * mb + hp
            s2[b, j] = h_new
        for j in range(H):
            c[b, j] = s1[b, j]
        for j in range(H):
            h[b, j] = s2[b, j]


@njit(**_INLINE)
def _lstm_bwd(dmm, ddir, dc, dout_t, gates, c_prev, c, m, use_mask, dgi, s1, s2):
    B, H = dmm.shape
    one = dmm.dtype.type(1)
    for b in range(B):
        mb = m[b] if use_mask else one
        for j in range(H):  # dh = dh_prev(t+1) · W_hh + direct part + this step's output gradient
            s1[b, j] = dmm[b, j] + ddir[b, j] + dout_t[b, j] * mb
        for j in range(H):  # dc_t = dc ⊙ m + dh ⊙ m ⊙ o ⊙ (1 − tanh²c)
            tc = _tanh(c[b, j])
            s2[b, j] = (dc[b, j] + s1[b, j] * gates[b, 3 * H + j] * (one - tc * tc)) * mb
        for j in range(H):  # dō = dh ⊙ tanh c ⊙ o(1 − o)
            o = gates[b, 3 * H + j]
            dgi[b, 3 * H + j] = s1[b, j] * mb * _tanh(c[b, j]) * o * (one - o)
        for j in range(H):  # dī = dc_t ⊙ g ⊙ i(1 − i)
            i = gates[b, j]
            dgi[b, j] = s2[b, j] * gates[b, 2 * H + j] * i * (one - i)
        for j in range(H):  # df̄ = dc_t ⊙ c_prev ⊙ f(1 − f)
            f = gates[b, H + j]
            dgi[b, H + j] = s2[b, j] * c_prev[b, j] * f * (one - f)
        for j in range(H):  # dḡ = dc_t ⊙ i ⊙ (1 − g²)
            g = gates[b, 2 * H + j]
            dgi[b, 2 * H + j] = s2[b, j] * gates[b, j] * (one - g * g)
        for j in range(H):  # dc_prev = dc_t ⊙ f (and dc for a finished sequence)
            dc[b, j] = s2[b, j] * gates[b, H + j] + dc[b, j] * (one - mb)
        for j in range(H):  # dh_prev directly: only a finished sequence's dh
            ddir[b, j] = s1[b, j] * (one - mb)


@njit(**_JIT)
def lstm_step_forward(gi, gh, b_hh, h_prev, c_prev, m, h, c, gates):
    """Compiled :func:`npgru.kernels.lstm_step_forward`."""
    s1, s2 = np.empty_like(h), np.empty_like(h)
    if m is None:
        _lstm_fwd(gi, gh, b_hh, h_prev, c_prev, b_hh, False, h, c, gates, s1, s2)
    else:
        _lstm_fwd(gi, gh, b_hh, h_prev, c_prev, m, True, h, c, gates, s1, s2)


@njit(**_JIT)
def lstm_step_backward(dmm, ddir, dc, dout_t, gates, c_prev, c, m, dgi):
    """Compiled :func:`npgru.kernels.lstm_step_backward`."""
    s1, s2 = np.empty_like(dmm), np.empty_like(dmm)
    if m is None:
        _lstm_bwd(dmm, ddir, dc, dout_t, gates, c_prev, c, dout_t[0], False, dgi, s1, s2)
    else:
        _lstm_bwd(dmm, ddir, dc, dout_t, gates, c_prev, c, m, True, dgi, s1, s2)


@njit(**_JIT)
def _lstm_seq_forward(gi, w_hh, b_hh, mask, hs, cs, gates):
    use_mask = mask.shape[0] > 0
    gh = np.empty(gi.shape[1:], dtype=hs.dtype)
    s1, s2 = np.empty_like(hs[0]), np.empty_like(hs[0])
    for t in range(gi.shape[0]):
        _dot(hs[t], w_hh, 0, 0, gh)  # gh = h_prev · W_hhᵀ
        m = mask[t] if use_mask else b_hh
        _lstm_fwd(gi[t], gh, b_hh, hs[t], cs[t], m, use_mask, hs[t + 1], cs[t + 1], gates[t],
                  s1, s2)


def lstm_seq_forward(gi, w_hh, b_hh, mask, hs, cs, gates):
    """Compiled :func:`npgru.kernels.lstm_forward_loop` (small shapes: the GEMM is a loop)."""
    _lstm_seq_forward(gi, w_hh, b_hh, _mask_or_empty(mask, gi[0]), hs, cs, gates)


@njit(**_JIT)
def _lstm_seq_backward(dout, dh_n, dc_n, cs, gates, mask, w_hh, dgi):
    use_mask = mask.shape[0] > 0
    dmm = np.zeros_like(dh_n)
    ddir, dc = dh_n.copy(), dc_n.copy()
    s1, s2 = np.empty_like(dh_n), np.empty_like(dh_n)
    wt = np.ascontiguousarray(w_hh.T)  # (H, 4H): dgates · W_hh as dot products along its rows
    for t in range(dout.shape[0] - 1, -1, -1):
        m = mask[t] if use_mask else dout[t, 0]
        _lstm_bwd(dmm, ddir, dc, dout[t], gates[t], cs[t], cs[t + 1], m, use_mask, dgi[t], s1, s2)
        _dot(dgi[t], wt, 0, 0, dmm)  # dh_prev = direct + dgates · W_hh
    return dmm + ddir, dc


def lstm_seq_backward(dout, dh_n, dc_n, hs, cs, gates, mask, w_hh, dgi, dgh=None):
    """Compiled :func:`npgru.kernels.lstm_backward_loop`; returns ``(dh0, dc0)``."""
    return _lstm_seq_backward(dout, dh_n, dc_n, cs, gates, _mask_or_empty(mask, dout[0]), w_hh,
                              dgi)


@njit(**_INLINE)
def _lstm_cell(x, h_prev, c_prev, w_ih, w_hh, b_ih, b_hh, h, c, work, wbuf):
    gi, gh = work[0], work[1]
    _input_proj(x, w_ih, gi, wbuf)
    _dot(h_prev, w_hh, 0, 0, gh)
    B, H = h.shape
    for b in range(B):
        for j in range(H):
            i = _sigmoid(gi[b, j] + b_ih[j] + gh[b, j] + b_hh[j])
            f = _sigmoid(gi[b, H + j] + b_ih[H + j] + gh[b, H + j] + b_hh[H + j])
            g = _tanh(gi[b, 2 * H + j] + b_ih[2 * H + j] + gh[b, 2 * H + j] + b_hh[2 * H + j])
            o = _sigmoid(gi[b, 3 * H + j] + b_ih[3 * H + j] + gh[b, 3 * H + j] + b_hh[3 * H + j])
            c_new = f * c_prev[b, j] + i * g
            c[b, j] = c_new
            h[b, j] = o * _tanh(c_new)


@njit(**_JIT)
def lstm_cell(x, h_prev, c_prev, w_ih, w_hh, b_ih, b_hh, h, c, work):
    """Compiled :func:`npgru.kernels.lstm_cell` (small shapes; both GEMMs as loops)."""
    _lstm_cell(x, h_prev, c_prev, w_ih, w_hh, b_ih, b_hh, h, c, work, b_ih[:0])


@njit(**_JIT)
def lstm_stream_step(x, h, c, flat, offs, out_h, out_c, work, hbuf, wbuf):
    """Compiled :func:`npgru.kernels.lstm_stream_step`: every layer of one step in one call."""
    L, B, H = h.shape
    if not _finite(x, h) or not _finite(c, c):
        return False
    zeros = work[3, 0]
    new_h, new_c = hbuf[:B], hbuf[B:]
    inp = x
    for k in range(L):
        w_ih, w_hh, b_ih, b_hh = _layer_weights(flat, offs, k, 4, H, zeros)
        _lstm_cell(inp, h[k], c[k], w_ih, w_hh, b_ih, b_hh, new_h, new_c, work, wbuf)
        for b in range(B):
            for j in range(H):
                out_h[k, b, j] = new_h[b, j]
                out_c[k, b, j] = new_c[b, j]
        inp = out_h[k]
    return True


# ---------------------------------------------------------------------------------------
# streaming above the compiled cells' size: BLAS GEMMs and the gate math in one compiled,
# vectorised pass instead of the twin's ≈15 NumPy passes (which cost half as much as the GEMMs
# at B = 128, H = 512). One thread against the twin: 183 vs 217 µs at B = 32, H = 256;
# 52 vs 75 µs at B = 48, H = 64; 37 vs 58 µs at B = 64, H = 64; 3.2 vs 4.0 ms at B = 128,
# H = 512; equal at B = 10, H = 256
# ---------------------------------------------------------------------------------------
@njit(**_JIT)
def torch_gates(gi, gh, b_ih, b_hh, h_prev, h):
    """The gate math of :func:`npgru.kernels.torch_cell` after its GEMMs, in one pass.

    ``gi = x·W_ihᵀ`` and ``gh = h_prev·W_hhᵀ`` (B, 3H) without their biases; writes ``h``
    (B, H), which must not overlap ``h_prev``.
    """
    B, H = h.shape
    for b in range(B):
        for j in range(H):  # one loop that writes only h: it vectorises
            r = _sigmoid(gi[b, j] + gh[b, j] + b_ih[j] + b_hh[j])
            z = _sigmoid(gi[b, H + j] + gh[b, H + j] + b_ih[H + j] + b_hh[H + j])
            n = _tanh(gi[b, 2 * H + j] + b_ih[2 * H + j] + r * (gh[b, 2 * H + j] + b_hh[2 * H + j]))
            h[b, j] = n + z * (h_prev[b, j] - n)


@njit(**_JIT)
def torch_gates_t(giT, ghT, b_ih, b_hh, h_prevT, hT):
    """:func:`torch_gates` in transposed space: ``giT``, ``ghT`` (3H, B), ``h_prevT`` and
    ``hT`` (H, B), every array read and written along its contiguous batch axis."""
    H, B = hT.shape
    for j in range(H):
        br, bz = b_ih[j] + b_hh[j], b_ih[H + j] + b_hh[H + j]
        bin_, bhn = b_ih[2 * H + j], b_hh[2 * H + j]
        for b in range(B):  # one loop that writes only hT: it vectorises
            r = _sigmoid(giT[j, b] + ghT[j, b] + br)
            z = _sigmoid(giT[H + j, b] + ghT[H + j, b] + bz)
            n = _tanh(giT[2 * H + j, b] + bin_ + r * (ghT[2 * H + j, b] + bhn))
            hT[j, b] = n + z * (h_prevT[j, b] - n)


#: from this batch size on, BLAS cells multiply ``h·Wᵀ``; below it ``W·hᵀ`` (transposed
#: space, as the twin) is faster (one thread, gates compiled either way)
BLAS_GATES_MIN_BATCH = 64


def blas_torch_cell(x, h_prev, w_ih, w_hh, b_ih, b_hh, h, work):
    """:func:`npgru.kernels.torch_cell` with its gate math compiled (BLAS shapes)."""
    B, H = h.shape
    if B < BLAS_GATES_MIN_BATCH:
        giT, ghT = (work[k].reshape(3 * H, B) for k in (0, 1))
        scratch = work[2].reshape(-1)
        h_prevT, hT = (scratch[k * H * B : (k + 1) * H * B].reshape(H, B) for k in (0, 1))
        np.matmul(w_ih, x.T, out=giT)
        np.matmul(w_hh, h_prev.T, out=ghT)
        h_prevT[...] = h_prev.T
        torch_gates_t(giT, ghT, b_ih, b_hh, h_prevT, hT)
        h[...] = hT.T
        return
    gi, gh = work[0], work[1]
    np.matmul(x, w_ih.T, out=gi)
    np.matmul(h_prev, w_hh.T, out=gh)
    torch_gates(gi, gh, b_ih, b_hh, h_prev, h)


#: cell name -> streaming step for shapes above the compiled cells' size (absent: the twin's)
BLAS_STREAMS = {"gru": partial(_twins.gru_stream_step, blas_torch_cell)}


# ---------------------------------------------------------------------------------------
# the kernel tables: large shapes run the twins' loop drivers (BLAS GEMMs) around the
# compiled step kernels; small shapes the whole-sequence kernels above
# ---------------------------------------------------------------------------------------
STEPS = _twins.step_kernels(globals())
TABLES = {
    "gru": _twins.loop_table(STEPS, "gru", torch_seq_forward, torch_seq_backward, stream_step),
    "gru_classic": _twins.loop_table(STEPS, "gru_classic", classic_seq_forward,
                                     classic_seq_backward, classic_stream_step),
    "lstm": _twins.loop_table(STEPS, "lstm", lstm_seq_forward, lstm_seq_backward,
                              lstm_stream_step),
}
check_tables(TABLES, _twins.TABLES)
