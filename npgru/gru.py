"""The GRU: a pure forward/backward pair for one layer and one direction, and the layer.

``gru_forward`` / ``gru_backward`` are CS231n-style: forward returns ``(out, h_n, cache)``,
backward takes ``(dout, dh_n, cache)`` and returns every gradient. They are shaped for speed:
the input projection of all steps is one GEMM, each step does one hidden GEMM (two for the
classic variant) plus the element-wise gate math from :mod:`npgru.kernels`, and the weight
gradients are one GEMM each after the reverse loop. The :class:`GRU` layer only composes them
over layers and directions. Equations: DESIGN §1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _backend
from ._checks import StateError, as_lengths, as_real_array, check_positive_int, check_shape
from .module import Module

VARIANTS = ("torch", "classic")


@dataclass
class GRUCache:
    """What one layer-direction's backward needs from its forward."""

    variant: str
    x: np.ndarray  # (T, B, D) input
    hs: np.ndarray  # (T+1, B, H) states, hs[0] = h0
    gates: np.ndarray  # (T, B, 3H) [r, z, n] after their nonlinearities
    hid: np.ndarray  # (T, B, H) torch: gh_n; classic: r ⊙ h_prev
    mask: np.ndarray | None  # (T, B, 1) 1 while a sequence runs, None if all run T steps
    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: bool


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
    """
    T, B, D = x.shape
    H = w_hh.shape[1]
    K = _backend.kernels()
    # one GEMM for the input projection of every step
    gi = (x.reshape(T * B, D) @ w_ih.T).reshape(T, B, 3 * H)
    if b_ih is not None:
        gi += b_ih
    hs = np.empty((T + 1, B, H), dtype=x.dtype)
    hs[0] = h0
    gates = np.empty((T, B, 3 * H), dtype=x.dtype)
    hid = np.empty((T, B, H), dtype=x.dtype)
    if variant == "torch":
        u_t = np.ascontiguousarray(w_hh.T)
        gh = np.empty((B, 3 * H), dtype=x.dtype)
        for t in range(T):
            np.matmul(hs[t], u_t, out=gh)
            if b_hh is not None:
                gh += b_hh
            K.torch_step_forward(gi[t], gh, hs[t], _at(mask, t), hs[t + 1], gates[t], hid[t])
    else:
        u_rz_t = np.ascontiguousarray(w_hh[: 2 * H].T)
        u_n_t = np.ascontiguousarray(w_hh[2 * H :].T)
        gh_rz = np.empty((B, 2 * H), dtype=x.dtype)
        gh_n = np.empty((B, H), dtype=x.dtype)
        for t in range(T):
            np.matmul(hs[t], u_rz_t, out=gh_rz)
            if b_hh is not None:
                gh_rz += b_hh[: 2 * H]
            K.classic_step_gates(gi[t], gh_rz, hs[t], gates[t], hid[t])
            np.matmul(hid[t], u_n_t, out=gh_n)
            if b_hh is not None:
                gh_n += b_hh[2 * H :]
            K.classic_step_forward(gi[t], gh_n, hs[t], _at(mask, t), hs[t + 1], gates[t])
    out = hs[1:] if mask is None else hs[1:] * mask
    cache = GRUCache(variant, x, hs, gates, hid, mask, w_ih, w_hh, b_ih is not None)
    return out, hs[T].copy(), cache


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
    x, hs, gates, hid, mask = cache.x, cache.hs, cache.gates, cache.hid, cache.mask
    w_ih, w_hh = cache.w_ih, cache.w_hh
    T, B, D = x.shape
    H = w_hh.shape[1]
    K = _backend.kernels()
    dgi = np.empty((T, B, 3 * H), dtype=x.dtype)  # gradients of the input pre-activations
    dh = np.zeros((B, H), dtype=x.dtype) if dh_n is None else dh_n.astype(x.dtype, copy=True)
    if cache.variant == "torch":
        dgh = np.empty((T, B, 3 * H), dtype=x.dtype)  # … and of the hidden pre-activations
        for t in range(T - 1, -1, -1):
            m = _at(mask, t)
            dh += dout[t] if m is None else dout[t] * m
            direct = K.torch_step_backward(dh, gates[t], hid[t], hs[t], m, dgi[t], dgh[t])
            # dh_prev = direct + dgh · W_hh
            dh = np.matmul(dgh[t], w_hh)
            dh += direct
        # one GEMM each after the loop: dW_hh = Σ_t dgh_tᵀ h_{t−1}
        dw_hh = _flat(dgh).T @ _flat(hs[:-1])
        db_hh = dgh.sum(axis=(0, 1))
    else:
        u_rz, u_n = w_hh[: 2 * H], w_hh[2 * H :]
        for t in range(T - 1, -1, -1):
            m = _at(mask, t)
            dh += dout[t] if m is None else dout[t] * m
            dh_prev = K.classic_step_backward(dh, gates[t], hs[t], m, dgi[t])
            # d(r ⊙ h_prev) = dn̄ · U_n
            drh = dgi[t, :, 2 * H :] @ u_n
            K.classic_step_backward_reset(drh, gates[t], hs[t], dgi[t], dh_prev)
            # dh_prev += [dr̄, dz̄] · U_rz
            dh_prev += dgi[t, :, : 2 * H] @ u_rz
            dh = dh_prev
        # the r, z rows see h_prev; the candidate rows see r ⊙ h_prev
        dw_hh = np.concatenate(
            [_flat(dgi[..., : 2 * H]).T @ _flat(hs[:-1]), _flat(dgi[..., 2 * H :]).T @ _flat(hid)]
        )
        db_hh = dgi.sum(axis=(0, 1))
    # dx = dgi · W_ih and dW_ih = Σ_t dgi_tᵀ x_t, one GEMM each
    dx = (_flat(dgi) @ w_ih).reshape(T, B, D)
    dw_ih = _flat(dgi).T @ _flat(x)
    db_ih = dgi.sum(axis=(0, 1))
    if not cache.bias:
        db_ih = db_hh = None
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


def _at(mask, t):
    return None if mask is None else mask[t]


def _flat(a: np.ndarray) -> np.ndarray:
    """Merge the leading (time, batch) axes: (T, B, K) -> (T·B, K)."""
    return a.reshape(-1, a.shape[-1])


def reverse_index(lengths: np.ndarray | None, T: int) -> np.ndarray | None:
    """Time index that reverses each sequence within its own length (padding stays put).

    ``idx[t, b] = L_b − 1 − t`` for ``t < L_b``, else ``t``. Applying it twice is the
    identity, so it maps inputs into reversed time and outputs back.
    """
    if lengths is None:
        return None
    t = np.arange(T)[:, None]
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _reverse(a: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    if idx is None:
        return np.ascontiguousarray(a[::-1])
    return a[idx, np.arange(a.shape[1])[None, :]]


class GRU(Module):
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
        hidden matmul and lets ``z`` weight the candidate (DESIGN §1).
    dtype : float32 or float64, default float32
    seed : int or None
        Seeds the initialisation ``U(−1/√H, 1/√H)`` and the dropout masks.

    Attributes
    ----------
    params, grads : dict[str, ndarray]
        Views into ``flat_params`` / ``flat_grads``, keyed like PyTorch's state dict.
    """

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
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout)
        self.variant = variant
        self.seed = seed
        init_rng, dropout_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self._dropout_rng = dropout_rng
        H = self.hidden_size
        k = 1.0 / np.sqrt(H)
        values = {}
        for name, shape in self._param_shapes():
            values[name] = init_rng.uniform(-k, k, size=shape)
        self._init_params(values, dtype)
        self._cache = None

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            variant=self.variant,
            dtype=self.dtype.name,
        )

    def _param_shapes(self):
        H, dirs = self.hidden_size, self.num_directions
        for k in range(self.num_layers):
            D = self.input_size if k == 0 else H * dirs
            for sfx in self._suffixes(k):
                yield f"weight_ih{sfx}", (3 * H, D)
                yield f"weight_hh{sfx}", (3 * H, H)
                if self.bias:
                    yield f"bias_ih{sfx}", (3 * H,)
                    yield f"bias_hh{sfx}", (3 * H,)

    def _suffixes(self, layer: int):
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def _layer_params(self, sfx: str):
        p = self.params
        b = (p[f"bias_ih{sfx}"], p[f"bias_hh{sfx}"]) if self.bias else (None, None)
        return p[f"weight_ih{sfx}"], p[f"weight_hh{sfx}"], *b

    # -- forward / backward -------------------------------------------------------------
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
        x = as_real_array("x", x, self.dtype, ndim=3)
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"x must have last dimension input_size={self.input_size}, got shape {x.shape}"
            )
        if self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        T, B, _ = x.shape
        if T == 0 or B == 0:
            raise ValueError(f"x must have at least one step and one sequence, got shape {x.shape}")
        H, dirs, L = self.hidden_size, self.num_directions, self.num_layers
        given_h0 = h0 is not None
        if given_h0:
            h0 = as_real_array("h0", h0, self.dtype, ndim=3)
            check_shape("h0", h0, (L * dirs, B, H))
        else:
            h0 = np.zeros((L * dirs, B, H), dtype=self.dtype)
        lengths = as_lengths(lengths, B, T)
        if lengths is not None and np.all(lengths == T):
            lengths = None  # every sequence runs the whole length: no masking needed
        mask = None
        if lengths is not None:
            mask = (np.arange(T)[:, None] < lengths[None, :]).astype(self.dtype)[..., None]
        rev = reverse_index(lengths, T)

        caches, drop_masks, h_n = [], [], np.empty((L * dirs, B, H), dtype=self.dtype)
        inp = x
        for k in range(L):
            outs = []
            for d, sfx in enumerate(self._suffixes(k)):
                xin = inp if d == 0 else _reverse(inp, rev)
                out, h_n[k * dirs + d], cache = gru_forward(
                    xin, h0[k * dirs + d], *self._layer_params(sfx), mask=mask, variant=self.variant
                )
                outs.append(out if d == 0 else _reverse(out, rev))
                caches.append(cache)
            inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=-1)
            drop = None
            if self.training and self.dropout > 0 and k < L - 1:
                keep = self._dropout_rng.random(inp.shape) >= self.dropout
                drop = keep.astype(self.dtype) / (1.0 - self.dropout)
                inp = inp * drop
            drop_masks.append(drop)
        self._cache = (caches, drop_masks, rev, given_h0, (T, B))
        out = np.ascontiguousarray(inp.transpose(1, 0, 2)) if self.batch_first else inp
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
        if self._cache is None:
            raise StateError(
                "backward needs a preceding forward: call forward(x) first "
                "(each forward's cache can be used by one backward only)"
            )
        caches, drop_masks, rev, given_h0, (T, B) = self._cache
        H, dirs, L = self.hidden_size, self.num_directions, self.num_layers
        dout = as_real_array("dout", dout, self.dtype, ndim=3)
        check_shape("dout", dout, (B, T, dirs * H) if self.batch_first else (T, B, dirs * H))
        if dh_n is not None:
            dh_n = as_real_array("dh_n", dh_n, self.dtype, ndim=3)
            check_shape("dh_n", dh_n, (L * dirs, B, H))
        self._cache = None
        if self.batch_first:
            dout = np.ascontiguousarray(dout.transpose(1, 0, 2))
        dh0 = np.empty((L * dirs, B, H), dtype=self.dtype)
        g = self.grads
        d_inp = dout
        for k in range(L - 1, -1, -1):
            if drop_masks[k] is not None:
                d_inp = d_inp * drop_masks[k]
            d_next = None
            for d, sfx in enumerate(self._suffixes(k)):
                i = k * dirs + d
                d_out = d_inp[..., d * H : (d + 1) * H]
                d_out = np.ascontiguousarray(d_out) if d == 0 else _reverse(d_out, rev)
                dx, dh0[i], dw_ih, dw_hh, db_ih, db_hh = gru_backward(
                    d_out, None if dh_n is None else dh_n[i], caches[i]
                )
                g[f"weight_ih{sfx}"][...] = dw_ih
                g[f"weight_hh{sfx}"][...] = dw_hh
                if self.bias:
                    g[f"bias_ih{sfx}"][...] = db_ih
                    g[f"bias_hh{sfx}"][...] = db_hh
                dx = dx if d == 0 else _reverse(dx, rev)
                d_next = dx if d_next is None else d_next + dx
            d_inp = d_next
        dx = np.ascontiguousarray(d_inp.transpose(1, 0, 2)) if self.batch_first else d_inp
        return dx, (dh0 if given_h0 else None)

    __call__ = forward

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"GRU({args})"
