"""The GRU: its two cells (PyTorch's form and the classic textbook form), the functional pair for
one layer and one direction, and the layer.

Each cell is a :class:`~npgru.cell.Cell`: three gate blocks ``[r, z, n]``, one state, the
arrays its forward keeps, a float64 reference step pair, and its kernels in
:mod:`npgru.kernels` / :mod:`npgru._numba_kernels`. ``gru_forward`` / ``gru_backward`` are
CS231n-style: forward returns ``(out, h_n, cache)``, backward takes ``(dout, dh_n, cache)`` and
returns every gradient. Layers, directions, lengths, workspaces and streaming are the cell-free
:mod:`npgru.recurrence`; the :class:`GRU` layer only picks the cell and spells the state ``h``.

Speed (``benchmarks/bench_gru.py``): on the Numba backend, small batch × hidden sizes run the
whole time loop in one compiled call, larger ones a Python loop of one BLAS GEMM and one fused
gate kernel per step; the layer reuses its big arrays from call to call and streams with
:meth:`GRU.step`.
"""

from __future__ import annotations

import numpy as np

from .cell import Cell, affine, affine_grads, sigmoid
from .recurrence import Cache, Recurrent, as_kernel_array, backward_core, float_dtype, forward_core

#: the type of the cache :func:`gru_forward` returns
GRUCache = Cache


# -- the float64 reference steps (readable; the kernels are checked against them) ------------
def _torch_step_forward(x, state, p):
    """``r, z = σ(gi + gh)``, ``n = tanh(gi_n + r ⊙ gh_n)``, ``h = (1 − z) ⊙ n + z ⊙ h_prev``."""
    (h_prev,) = state
    gi, gh = affine(x, h_prev, p)
    H = h_prev.shape[1]
    r, z = sigmoid(gi[:, :H] + gh[:, :H]), sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
    n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    h = (1 - z) * n + z * h_prev
    return (h,), (x, h_prev, p, r, z, n, gh[:, 2 * H :])


def _torch_step_backward(dstate, cache):
    (dh,) = dstate
    x, h_prev, p, r, z, n, gh_n = cache
    dn = dh * (1 - z) * (1 - n * n)
    dz = dh * (h_prev - n) * z * (1 - z)
    dr = dn * gh_n * r * (1 - r)
    dgi = np.concatenate([dr, dz, dn], axis=1)
    dgh = np.concatenate([dr, dz, dn * r], axis=1)
    dx, dh_prev, dp = affine_grads(x, h_prev, dgi, dgh, p)
    return dx, (dh_prev + dh * z,), dp


def _classic_step_forward(x, state, p):
    """``r, z = σ(·)``, ``h̃ = tanh(W_n x + U_n (r ⊙ h_prev) + b)``, ``h = (1 − z) ⊙ h_prev + z ⊙ h̃``."""
    (h_prev,) = state
    H = h_prev.shape[1]
    U = p["weight_hh"]
    a = x @ p["weight_ih"].T + p.get("bias_ih", 0.0) + p.get("bias_hh", 0.0)
    r = sigmoid(a[:, :H] + h_prev @ U[:H].T)
    z = sigmoid(a[:, H : 2 * H] + h_prev @ U[H : 2 * H].T)
    n = np.tanh(a[:, 2 * H :] + (r * h_prev) @ U[2 * H :].T)
    h = (1 - z) * h_prev + z * n
    return (h,), (x, h_prev, p, r, z, n)


def _classic_step_backward(dstate, cache):
    (dh,) = dstate
    x, h_prev, p, r, z, n = cache
    H = h_prev.shape[1]
    U = p["weight_hh"]
    dn = dh * z * (1 - n * n)
    dz = dh * (n - h_prev) * z * (1 - z)
    drh = dn @ U[2 * H :]  # through U_n (r ⊙ h_prev)
    dr = drh * h_prev * r * (1 - r)
    da = np.concatenate([dr, dz, dn], axis=1)
    # the r, z rows of weight_hh see h_prev, the candidate rows r ⊙ h_prev
    dp = {"weight_ih": da.T @ x,
          "weight_hh": np.concatenate([da[:, : 2 * H].T @ h_prev, dn.T @ (r * h_prev)])}
    if "bias_ih" in p:
        dp["bias_ih"] = dp["bias_hh"] = da.sum(axis=0)
    dh_prev = da[:, : 2 * H] @ U[: 2 * H] + drh * r + dh * (1 - z)
    return da @ p["weight_ih"], (dh_prev,), dp


# -- hidden-side weight gradients after the backward loop (one GEMM per block) -----------------
def _torch_hidden_grads(dgi, dgh_n, arrays, dw_hh, db_hh):
    """``dW_hh = Σ_t dgh_tᵀ h_{t−1}`` with ``dgh = [dr̄, dz̄, dn̄ ⊙ r]``: its first two blocks are
    ``dgi``'s, so backward keeps only the candidate block (column slices of the flat view go
    to BLAS as they are, without a copy)."""
    hs = arrays["hs"]
    H = hs.shape[2]
    h2 = hs[:-1].reshape(-1, H)
    np.matmul(dgi[:, : 2 * H].T, h2, out=dw_hh[: 2 * H])
    np.matmul(dgh_n.T, h2, out=dw_hh[2 * H :])
    np.sum(dgi[:, : 2 * H], axis=0, out=db_hh[: 2 * H])
    np.sum(dgh_n, axis=0, out=db_hh[2 * H :])


def _classic_hidden_grads(dgi, dgh, arrays, dw_hh, db_hh):
    """The r, z rows see ``h_prev``; the candidate rows see ``r ⊙ h_prev`` (kept as ``hid``)."""
    hs, hid = arrays["hs"], arrays["hid"]
    H = hs.shape[2]
    np.matmul(dgi[:, : 2 * H].T, hs[:-1].reshape(-1, H), out=dw_hh[: 2 * H])
    np.matmul(dgi[:, 2 * H :].T, hid.reshape(-1, H), out=dw_hh[2 * H :])
    np.sum(dgi, axis=0, out=db_hh)


#: ``variant="torch"``: PyTorch's ``nn.GRU`` (``hid`` keeps ``gh_n + b_hn`` for backward)
TORCH_CELL = Cell("gru", gates=3, states=("h",), saved=(("gates", 3), ("hid", 1)),
                  hidden_grads=_torch_hidden_grads, step_forward=_torch_step_forward,
                  step_backward=_torch_step_backward, dgh_width=1, dgh_reuses="hid")
#: ``variant="classic"``: reset before the hidden matmul (``hid`` keeps ``r ⊙ h_prev``)
CLASSIC_CELL = Cell("gru_classic", gates=3, states=("h",), saved=(("gates", 3), ("hid", 1)),
                    hidden_grads=_classic_hidden_grads, step_forward=_classic_step_forward,
                    step_backward=_classic_step_backward)
CELLS = {"torch": TORCH_CELL, "classic": CLASSIC_CELL}
VARIANTS = tuple(CELLS)


def _cell(variant: str) -> Cell:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return CELLS[variant]


# -- the functional pair ------------------------------------------------------------------------
def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, mask=None, variant="torch"):
    """Run one GRU layer in one direction over a time-major sequence.

    Parameters
    ----------
    x : ndarray, shape (T, B, D)
    h0 : ndarray, shape (B, H)
    w_ih : ndarray, shape (3H, D)
        Input weights, row blocks ``[r, z, n]``.
    w_hh : ndarray, shape (3H, H)
        Hidden weights, row blocks ``[r, z, n]``.
    b_ih, b_hh : ndarray, shape (3H,), or None
        Biases, both present or both ``None``.
    mask : ndarray, shape (T, B, 1), or None
        1 while a sequence runs, 0 on its padding; ``None`` if all run ``T`` steps.
    variant : {"torch", "classic"}

    Returns
    -------
    out : ndarray, shape (T, B, H)
        ``h_t`` at every step, zero on padding.
    h_n : ndarray, shape (B, H)
        Each sequence's state after its own last step.
    cache : GRUCache

    Notes
    -----
    Every shape is checked here, before any kernel runs, so no input can make a compiled
    kernel read out of bounds.
    """
    cell = _cell(variant)
    x, w_ih, w_hh = (np.asarray(a) for a in (x, w_ih, w_hh))
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x must be a non-empty 3-D array (T, B, D), got shape {x.shape}")
    if w_hh.ndim != 2 or w_hh.shape[0] != 3 * w_hh.shape[1] or w_hh.shape[1] == 0:
        raise ValueError(f"w_hh must have shape (3H, H), got {w_hh.shape}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    T, B, D = x.shape
    H = w_hh.shape[1]
    dt = float_dtype(x=x, w_ih=w_ih, w_hh=w_hh)
    x = as_kernel_array("x", x, dt, (T, B, D))
    w_ih = as_kernel_array("w_ih", w_ih, dt, (3 * H, D))
    w_hh = as_kernel_array("w_hh", w_hh, dt, (3 * H, H))
    h0 = as_kernel_array("h0", h0, dt, (B, H))
    if b_ih is not None:
        b_ih = as_kernel_array("b_ih", b_ih, dt, (3 * H,))
        b_hh = as_kernel_array("b_hh", b_hh, dt, (3 * H,))
    m2 = None
    if mask is not None:
        m2 = as_kernel_array("mask", mask, dt, (T, B, 1)).reshape(T, B)
    out, (h_n,), cache = forward_core(cell, x, (h0,), w_ih, w_hh, b_ih, b_hh, m2, None)
    return out, h_n, cache


def gru_backward(dout, dh_n, cache: GRUCache):
    """Backpropagate through time for one layer and one direction.

    Parameters
    ----------
    dout : ndarray, shape (T, B, H)
        Gradient of the loss with respect to ``out`` (ignored on padding).
    dh_n : ndarray, shape (B, H), or None
        Gradient with respect to ``h_n``.
    cache : GRUCache
        From :func:`gru_forward`.

    Returns
    -------
    dx : ndarray, shape (T, B, D)
    dh0 : ndarray, shape (B, H)
    dw_ih, dw_hh : ndarray
    db_ih, db_hh : ndarray or None
        ``None`` when the layer has no bias.
    """
    if not (isinstance(cache, Cache) and cache.cell in CELLS.values()):
        raise TypeError(f"cache must be the GRUCache returned by gru_forward, got {type(cache)}")
    T, B, D = cache.x.shape
    H = cache.w_hh.shape[1]
    dt = cache.x.dtype
    dout = as_kernel_array("dout", dout, dt, (T, B, H))
    dh_n = None if dh_n is None else as_kernel_array("dh_n", dh_n, dt, (B, H))
    dx, (dh0,), *grads = backward_core(dout, (dh_n,), cache, None)
    return dx, dh0, *grads


class GRU(Recurrent):
    """A multi-layer, optionally bidirectional GRU with hand-written backpropagation.

    Same names, shapes, defaults and state-dict keys as ``torch.nn.GRU``.

    Parameters
    ----------
    input_size : int
        Features per time step, ``D``.
    hidden_size : int
        State size, ``H``.
    num_layers : int, default 1
    bias : bool, default True
        With ``False`` there are no ``bias_*`` parameters.
    batch_first : bool, default False
        Input and output are ``(B, T, ·)`` instead of ``(T, B, ·)``; ``h0``/``h_n`` are not
        affected.
    bidirectional : bool, default False
    dropout : float, default 0.0
        Dropout on the outputs of every layer but the last, in training mode only.
    variant : {"torch", "classic"}, default "torch"
        ``"torch"`` equals ``torch.nn.GRU``; ``"classic"`` applies the reset gate before the
        hidden matmul and lets ``z`` weight the candidate.
    dtype : float32 or float64, default float32
    seed : int or None
        Seeds the initialisation ``U(−1/√H, 1/√H)`` and the dropout masks.

    Attributes
    ----------
    params, grads : dict[str, ndarray]
        Views into ``flat_params`` / ``flat_grads``, keyed like PyTorch's state dict.
    """

    cell = TORCH_CELL  # the default; an instance holds its variant's

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        dropout: float = 0.0,
        variant: str = "torch",
        dtype=np.float32,
        seed: int | None = None,
    ) -> None:
        cell = _cell(variant)
        self.variant = variant
        self._setup(cell, input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                    dropout, dtype, seed)

    def _cell_config(self) -> dict:
        return {"variant": self.variant}

    def forward(self, x, h0=None, lengths=None):
        """Run the GRU.

        Parameters
        ----------
        x : array_like, shape (T, B, D), or (B, T, D) with ``batch_first``
        h0 : array_like, shape (num_layers·dirs, B, H), optional
            Initial states; zeros if omitted.
        lengths : array_like of int, shape (B,), optional
            Valid steps per (right-padded) sequence, each in ``[1, T]``. As PyTorch's packed
            sequences: a state stops at its sequence's end, padded outputs are zero, and
            the reverse direction starts at each sequence's own last step.

        Returns
        -------
        out : ndarray, shape (T, B, dirs·H) (or batch-first)
        h_n : ndarray, shape (num_layers·dirs, B, H)
        """
        out, (h_n,) = self._forward(x, None if h0 is None else (h0,), lengths)
        return out, h_n

    def backward(self, dout, dh_n=None):
        """Backpropagate through the last :meth:`forward`; fills :attr:`grads`.

        Parameters
        ----------
        dout : array_like
            Gradient with respect to ``out``, same shape as ``out``.
        dh_n : array_like, shape (num_layers·dirs, B, H), optional
            Gradient with respect to ``h_n``.

        Returns
        -------
        dx : ndarray
            Gradient with respect to ``x``, same shape as ``x``.
        dh0 : ndarray or None
            Gradient with respect to ``h0``; ``None`` if ``h0`` was not given.
        """
        dx, dstate0 = self._backward(dout, None if dh_n is None else (dh_n,))
        return dx, (None if dstate0 is None else dstate0[0])

    def step(self, x, h=None, out=None):
        """Advance every layer by one time step: streaming inference for devices.

        ``h = gru.step(x_t, h)`` over a sequence gives the same states as :meth:`forward`
        (its ``h_n`` after the last step; ``h[-1]`` is ``out[t]``). Nothing is kept for
        backward and dropout is off, as in :meth:`eval`. Apart from its result (none at all
        with ``out=``) a call allocates nothing: scratch buffers are kept between calls.

        Parameters
        ----------
        x : ndarray, shape (B, D)
            This step's input.
        h : ndarray, shape (num_layers, B, H), optional
            The states after the previous step; zeros if omitted.
        out : ndarray, shape (num_layers, B, H), optional
            Where to write the new states (may be ``h`` itself, to update in place); a
            C-contiguous array of the layer's dtype.

        Returns
        -------
        ndarray, shape (num_layers, B, H)
            The new states (``out`` when given).
        """
        return self._step(x, (h,), (out,))[0]

    __call__ = forward
