"""Per-step element-wise gate math: the seam between the time loop and the compiled kernels.

``gru.py`` runs the time loop and the GEMMs; everything element-wise inside one step lives
here, behind four functions per variant with fixed signatures. Each writes into arrays it is
given (no allocation in the loop). These are the NumPy twins; Numba versions of the same math
have the same signatures and are chosen by :mod:`npgru._backend`.

Shapes: ``B`` batch, ``H`` hidden. ``gi``/``gh`` are ``(B, 3H)`` pre-activations with row
blocks ``[r, z, n]``; ``m`` is the ``(B, 1)`` step mask (1 where the sequence is still
running) or ``None`` when every sequence runs the whole length.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function written as ``(1 + tanh(x/2)) / 2``: no overflow for large ``|x|``."""
    out = np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1
    out *= 0.5
    return out


def _carry(h_new: np.ndarray, h_prev: np.ndarray, m: np.ndarray | None, h: np.ndarray) -> None:
    """``h = m ⊙ h_new + (1 − m) ⊙ h_prev``: a finished sequence keeps its state."""
    if m is None:
        h[...] = h_new
    else:
        np.subtract(h_new, h_prev, out=h)
        h *= m
        h += h_prev


# ---------------------------------------------------------------------------------------
# variant="torch": n = tanh(gi_n + r ⊙ gh_n), h = (1 − z) ⊙ n + z ⊙ h_prev
# ---------------------------------------------------------------------------------------
def torch_step_forward(gi, gh, h_prev, m, h, gates, hn):
    """One step of the PyTorch-form GRU.

    Writes ``h`` (B, H), ``gates`` (B, 3H) = ``[r, z, n]`` and ``hn`` (B, H) = ``gh_n``,
    the part of the hidden projection the backward pass needs.
    """
    H = h.shape[1]
    rz = gates[:, : 2 * H]
    sigmoid(np.add(gi[:, : 2 * H], gh[:, : 2 * H], out=rz), out=rz)
    r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
    hn[...] = gh[:, 2 * H :]
    np.multiply(r, hn, out=n)
    n += gi[:, 2 * H :]
    np.tanh(n, out=n)
    # h_new = n + z ⊙ (h_prev − n)
    h_new = np.subtract(h_prev, n)
    h_new *= z
    h_new += n
    _carry(h_new, h_prev, m, h)


def torch_step_backward(dh, gates, hn, h_prev, m, dgi, dgh):
    """Backward of one PyTorch-form step (as ATen's GRU cell).

    Writes the pre-activation gradients ``dgi`` (input side) and ``dgh`` (hidden side), both
    (B, 3H), and returns the part of ``dh_prev`` that does not go through ``W_hh``.
    """
    H = dh.shape[1]
    r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
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
    direct = dhm * z
    if m is not None:
        direct += dh * (1 - m)
    return direct


# ---------------------------------------------------------------------------------------
# variant="classic": h̃ = tanh(gi_n + U_n (r ⊙ h_prev) + c_n), h = (1 − z) ⊙ h_prev + z ⊙ h̃
# ---------------------------------------------------------------------------------------
def classic_step_gates(gi, gh_rz, h_prev, gates, rh):
    """First half of a classic step: ``r``, ``z`` into ``gates`` and ``rh = r ⊙ h_prev``."""
    H = h_prev.shape[1]
    rz = gates[:, : 2 * H]
    sigmoid(np.add(gi[:, : 2 * H], gh_rz, out=rz), out=rz)
    np.multiply(gates[:, :H], h_prev, out=rh)


def classic_step_forward(gi, gh_n, h_prev, m, h, gates):
    """Second half of a classic step, after ``gh_n = U_n (r ⊙ h_prev) + c_n``."""
    H = h.shape[1]
    z, n = gates[:, H : 2 * H], gates[:, 2 * H :]
    np.add(gi[:, 2 * H :], gh_n, out=n)
    np.tanh(n, out=n)
    # h_new = h_prev + z ⊙ (h̃ − h_prev)
    h_new = np.subtract(n, h_prev)
    h_new *= z
    h_new += h_prev
    _carry(h_new, h_prev, m, h)


def classic_step_backward(dh, gates, h_prev, m, dgi):
    """Backward of a classic step, update and candidate part.

    Writes ``dz̄`` and ``dn̄`` into ``dgi`` and returns the direct part of ``dh_prev``.
    """
    H = dh.shape[1]
    z, n = gates[:, H : 2 * H], gates[:, 2 * H :]
    dhm = dh if m is None else dh * m
    # dz̄ = dh ⊙ (h̃ − h_prev) ⊙ z(1 − z)
    dgi[:, H : 2 * H] = dhm * (n - h_prev) * z * (1 - z)
    # dn̄ = dh ⊙ z ⊙ (1 − h̃²)
    dgi[:, 2 * H :] = dhm * z * (1 - n * n)
    # ∂h/∂h_prev directly: 1 − z (and 1 for a finished sequence)
    direct = dhm * (1 - z)
    if m is not None:
        direct += dh * (1 - m)
    return direct


def classic_step_backward_reset(drh, gates, h_prev, dgi, dh_prev):
    """Backward through ``rh = r ⊙ h_prev`` given ``drh = dn̄ U_n``.

    Writes ``dr̄`` into ``dgi`` and adds ``drh ⊙ r`` to ``dh_prev``.
    """
    H = drh.shape[1]
    r = gates[:, :H]
    # dr̄ = drh ⊙ h_prev ⊙ r(1 − r)
    dgi[:, :H] = drh * h_prev * r * (1 - r)
    # d h_prev += drh ⊙ r
    dh_prev += drh * r
