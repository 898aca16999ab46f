"""The GRU: a pure forward/backward pair for one layer and one direction, and the layer.

``gru_forward`` / ``gru_backward`` are CS231n-style: forward returns ``(out, h_n, cache)``,
backward takes ``(dout, dh_n, cache)`` and returns every gradient. They are shaped for speed:
the input projection of all steps is one GEMM, each step does one hidden GEMM (two for the
classic variant) plus the element-wise gate math from :mod:`npgru.kernels`, and the weight
gradients are one GEMM each after the reverse loop. The :class:`GRU` layer only composes them
over layers and directions. Equations: DESIGN §1.

Speed (issue 3, ``benchmarks/bench_gru.py``): on the Numba backend, small batch × hidden sizes
run the whole time loop in one compiled call (:mod:`npgru._numba_kernels`), larger ones a
Python loop of one BLAS GEMM and one fused gate kernel per step. The :class:`GRU` layer reuses
its big arrays from call to call (:class:`_Workspace`) and streams with :meth:`GRU.step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _backend
from . import kernels as _numpy_kernels
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
    mask: np.ndarray | None  # (T, B) 1 while a sequence runs, None if all run T steps
    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: bool


# Whole-sequence compiled kernels multiply the hidden state by W_hh with loops (≈60 GFLOP/s,
# no call cost); a Python time loop around BLAS wins once a step's hidden GEMM has more than
# about this many multiply-adds (B·3H·H) or the batch grows. Measured (thread CPU time, one
# thread): compiled is 3× faster at (B, H) = (1, 64), 2× at (1, 256), 1.15× at (16, 32);
# BLAS is 1.1–1.2× faster at (64, 32), (32, 64), (64, 64), 2× at (4, 256).
SEQ_KERNEL_MAX_MACS = 200_000
SEQ_KERNEL_MAX_BH = 1024


def _use_seq_kernel(K, B: int, H: int) -> bool:
    """Run the whole time loop in compiled code? Only on the Numba backend, for small shapes."""
    return (getattr(K, "COMPILED", False) and B * H * 3 * H <= SEQ_KERNEL_MAX_MACS
            and B * H <= SEQ_KERNEL_MAX_BH)


def _float_dtype(**arrays) -> np.dtype:
    """The common dtype the kernels will run in: float32 or float64 (integers → float64)."""
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    dt = np.result_type(*[a.dtype for a in arrays.values()])
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"x and the weights must be float32 or float64, got {dt}")
    return dt


def _arr(name: str, a, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` as a C-contiguous ``dtype`` array of exactly ``shape`` (what the kernels assume)."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    check_shape(name, arr, shape)
    return np.ascontiguousarray(arr, dtype=dtype)


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
    kernel read out of bounds. Small shapes on the Numba backend run the whole time loop in
    one compiled call; otherwise each step is one BLAS GEMM plus one fused gate kernel.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    x, w_ih, w_hh = (np.asarray(a) for a in (x, w_ih, w_hh))
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"x must be a non-empty 3-D array (T, B, D), got shape {x.shape}")
    if w_hh.ndim != 2 or w_hh.shape[0] != 3 * w_hh.shape[1] or w_hh.shape[1] == 0:
        raise ValueError(f"w_hh must have shape (3H, H), got {w_hh.shape}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    T, B, D = x.shape
    H = w_hh.shape[1]
    dt = _float_dtype(x=x, w_ih=w_ih, w_hh=w_hh)
    x = _arr("x", x, dt, (T, B, D))
    w_ih = _arr("w_ih", w_ih, dt, (3 * H, D))
    w_hh = _arr("w_hh", w_hh, dt, (3 * H, H))
    h0 = _arr("h0", h0, dt, (B, H))
    bias = b_ih is not None
    if bias:
        b_ih = _arr("b_ih", b_ih, dt, (3 * H,))
        b_hh = _arr("b_hh", b_hh, dt, (3 * H,))
    m2 = None
    if mask is not None:
        m2 = _arr("mask", mask, dt, (T, B, 1)).reshape(T, B)
    return _forward_core(x, h0, w_ih, w_hh, b_ih, b_hh, m2, variant, None)


class _Workspace:
    """Arrays a :class:`GRU` layer reuses from call to call.

    A training step needs a few arrays of size T·B·3H; allocated afresh each call, every page
    of them is a page fault on first touch (the allocator returns big blocks to the system on
    free), which cost 30–70 % of a forward pass at the seed shape. Reused, they are touched
    warm. The layer keeps one set (≈ what one training step holds at its peak).
    """

    def __init__(self) -> None:
        self._arrays: dict = {}

    def get(self, key, shape: tuple[int, ...], dtype) -> np.ndarray:
        a = self._arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[key] = np.empty(shape, dtype=dtype)
        return a


def _empty(ws: _Workspace | None, key, shape: tuple[int, ...], dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype) if ws is None else ws.get(key, shape, dtype)


def _forward_core(x, h0, w_ih, w_hh, b_ih, b_hh, m2, variant, ws, key=0):
    """:func:`gru_forward` after validation: C-contiguous arrays of one float dtype and the
    right shapes, ``m2`` the (T, B) mask or None. With a workspace ``ws`` the cache arrays are
    ``ws``'s (valid until the next call with the same ``key``)."""
    T, B, D = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    bias = b_ih is not None
    K = _backend.kernels()
    # one GEMM for the input projection of every step
    gi = _empty(ws, "gi", (T, B, 3 * H), dt)
    np.matmul(x.reshape(T * B, D), w_ih.T, out=gi.reshape(T * B, 3 * H))
    if bias:
        gi += b_ih
    # the kernels always add b_hh (b_hn sits inside r ⊙ (·)); zeros stand in for "no bias"
    bh = b_hh if bias else np.zeros(3 * H, dtype=dt)
    hs = _empty(ws, ("hs", key), (T + 1, B, H), dt)
    hs[0] = h0
    gates = _empty(ws, ("gates", key), (T, B, 3 * H), dt)
    hid = _empty(ws, ("hid", key), (T, B, H), dt)
    seq = _use_seq_kernel(K, B, H)
    if variant == "torch":
        if seq:
            K.torch_seq_forward(gi, w_hh, bh, m2, hs, gates, hid)
        else:
            K.torch_forward_loop(K, gi, w_hh, bh, m2, hs, gates, hid)
    else:
        if seq:
            K.classic_seq_forward(gi, w_hh, bh, m2, hs, gates, hid)
        else:
            K.classic_forward_loop(K, gi, w_hh, bh, m2, hs, gates, hid)
    out = hs[1:] if m2 is None else hs[1:] * m2[..., None]
    cache = GRUCache(variant, x, hs, gates, hid, m2, w_ih, w_hh, bias)
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
    if not isinstance(cache, GRUCache):
        raise TypeError(f"cache must be the GRUCache returned by gru_forward, got {type(cache)}")
    T, B, D = cache.x.shape
    H = cache.w_hh.shape[1]
    dt = cache.x.dtype
    dout = _arr("dout", dout, dt, (T, B, H))
    dh_n = None if dh_n is None else _arr("dh_n", dh_n, dt, (B, H))
    return _backward_core(dout, dh_n, cache, None)


def _backward_core(dout, dh_n, cache: GRUCache, ws):
    """:func:`gru_backward` after validation; ``ws`` as in :func:`_forward_core`."""
    x, hs, gates, hid, mask = cache.x, cache.hs, cache.gates, cache.hid, cache.mask
    w_ih, w_hh = cache.w_ih, cache.w_hh
    T, B, D = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    dh_n = np.zeros((B, H), dtype=dt) if dh_n is None else dh_n
    K = _backend.kernels()
    seq = _use_seq_kernel(K, B, H)
    # gradients of the input pre-activations; in a workspace they take the place of the
    # forward's gi, which is dead once the forward is done
    dgi = _empty(ws, "gi", (T, B, 3 * H), dt)
    if cache.variant == "torch":
        # the hidden pre-activations' gradient is [dr̄, dz̄, dn̄ ⊙ r]: its first two blocks are
        # dgi's, so only the candidate block is stored
        # In the layer (one backward per forward) it overwrites hid: step t's hn_t is read
        # before its dgh_n_t is written, and neither is needed again.
        dgh_n = np.empty((T, B, H), dtype=dt) if ws is None else hid
        # per step (in the kernels): dz̄ = dh ⊙ (h_prev − n) ⊙ z(1−z), dn̄ = dh ⊙ (1−z) ⊙ (1−n²),
        # dr̄ = dn̄ ⊙ gh_n ⊙ r(1−r); dh_prev = dh ⊙ z + dgh · W_hh
        args = (dout, dh_n, gates, hid, hs, mask, w_hh, dgi, dgh_n)
        dh0 = K.torch_seq_backward(*args) if seq else K.torch_backward_loop(K, *args)
        # one GEMM each after the loop: dW_hh = Σ_t dgh_tᵀ h_{t−1} (column slices of the flat
        # 2-D view go to BLAS as they are, without a copy)
        g2, h2, n2 = _flat(dgi), _flat(hs[:-1]), _flat(dgh_n)
        dw_hh = np.concatenate([g2[:, : 2 * H].T @ h2, n2.T @ h2])
        db_hh = np.concatenate([g2[:, : 2 * H].sum(axis=0), n2.sum(axis=0)])
    else:
        # per step: dz̄ = dh ⊙ (h̃ − h_prev) ⊙ z(1−z), dn̄ = dh ⊙ z ⊙ (1−h̃²),
        # dr̄ = (dn̄ · U_n) ⊙ h_prev ⊙ r(1−r); dh_prev = dh ⊙ (1−z) + (dn̄ · U_n) ⊙ r + [dr̄, dz̄] · U_rz
        args = (dout, dh_n, gates, hid, hs, mask, w_hh, dgi)
        dh0 = K.classic_seq_backward(*args) if seq else K.classic_backward_loop(K, *args)
        # the r, z rows see h_prev; the candidate rows see r ⊙ h_prev
        # (column slices of the flat 2-D view go to BLAS as they are, without a copy)
        g2 = _flat(dgi)
        dw_hh = np.concatenate([g2[:, : 2 * H].T @ _flat(hs[:-1]), g2[:, 2 * H :].T @ _flat(hid)])
        db_hh = _flat(dgi).sum(axis=0)
    # dx = dgi · W_ih and dW_ih = Σ_t dgi_tᵀ x_t, one GEMM each
    dx = (_flat(dgi) @ w_ih).reshape(T, B, D)
    dw_ih = _flat(dgi).T @ _flat(x)
    db_ih = _flat(dgi).sum(axis=0)
    if not cache.bias:
        db_ih = db_hh = None
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh


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
        self._stream = None  # GRU.step's scratch, built on its first call

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
        m2 = None if mask is None else mask.reshape(T, B)
        ws = self._workspace()
        inp = x
        for k in range(L):
            outs = []
            for d, sfx in enumerate(self._suffixes(k)):
                i = k * dirs + d
                xin = inp if d == 0 else _reverse(inp, rev)
                # everything is validated above: straight to the core, with reused arrays
                out, h_n[i], cache = _forward_core(
                    xin, h0[i], *self._layer_params(sfx), m2, self.variant, ws, key=i
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
        if self.batch_first:
            out = np.ascontiguousarray(inp.transpose(1, 0, 2))
        else:  # a view into the workspace would change under the caller at the next call
            out = inp.copy() if inp.base is not None else inp
        return out, h_n

    def _workspace(self) -> _Workspace:
        ws = getattr(self, "_ws", None)
        if ws is None:
            ws = self._ws = _Workspace()
        return ws

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
                dx, dh0[i], dw_ih, dw_hh, db_ih, db_hh = _backward_core(
                    d_out, None if dh_n is None else dh_n[i], caches[i], self._workspace()
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

    # -- streaming ----------------------------------------------------------------------
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
        if self.bidirectional:
            raise ValueError(
                "step() streams forward in time, so it needs bidirectional=False: the reverse "
                "direction of a bidirectional GRU needs the whole sequence (use forward)"
            )
        dt, L, H, D = self.dtype, self.num_layers, self.hidden_size, self.input_size
        # fast path for the common case (right dtype, contiguous); otherwise convert and check
        if not (type(x) is np.ndarray and x.dtype == dt and x.flags.c_contiguous):
            x = as_real_array("x", x, dt, ndim=2)
        if x.ndim != 2 or x.shape[1] != D or x.shape[0] == 0:
            raise ValueError(f"x must have shape (B, {D}) (one step, batch B ≥ 1), got {x.shape}")
        B = x.shape[0]
        shape = (L, B, H)
        if h is None:
            h = np.zeros(shape, dtype=dt)
        elif not (type(h) is np.ndarray and h.dtype == dt and h.flags.c_contiguous):
            h = as_real_array("h", h, dt, ndim=3)
        if h.shape != shape:
            check_shape("h", h, shape)  # raises with the message
        if out is None:
            out = np.empty(shape, dtype=dt)
        else:
            if not (type(out) is np.ndarray and out.dtype == dt and out.flags.c_contiguous):
                raise TypeError(f"out must be a C-contiguous {dt} ndarray of shape {shape}")
            if out.shape != shape:
                check_shape("out", out, shape)
        K = _backend.kernels()
        st = getattr(self, "_stream", None)
        if st is None or st[0] != B or st[1] is not self.params or st[2] is not K:
            st = self._stream_state(B, K)
        _, _, _, kernel, offs, work, hbuf, wbuf = st
        if not kernel(x, h, self.flat_params, offs, out, work, hbuf, wbuf):
            raise ValueError("x and h must be finite (no NaN or Inf)")
        return out

    def _stream_state(self, B: int, K) -> tuple:
        """Scratch buffers, parameter offsets and the kernel for :meth:`step`, kept while the
        batch size, the parameter views (``params`` is rebound when a model adopts the layer)
        and the backend stay the same. The kernel reads the weights from ``flat_params`` at
        these offsets, so in-place updates (optimizers, ``load_state_dict``) are seen."""
        H, dt, flat = self.hidden_size, self.dtype, self.flat_params
        base = flat.__array_interface__["data"][0]

        def offset(p) -> int:
            if p is None:
                return -1
            off, rem = divmod(p.__array_interface__["data"][0] - base, dt.itemsize)
            # the kernels index flat_params directly: check the view really lies inside it
            if rem or not (0 <= off and off + p.size <= flat.size and p.flags.c_contiguous):
                raise RuntimeError("GRU parameters are not contiguous views into flat_params")
            return off

        offs = np.empty((self.num_layers, 5), dtype=np.int64)
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(f"_l{k}")
            offs[k] = [offset(w_ih), offset(w_hh), offset(b_ih), offset(b_hh), w_ih.shape[1]]
        # the compiled kernel multiplies with loops: right for small shapes; BLAS for big ones
        D = max(self.input_size, H)
        small = getattr(K, "COMPILED", False) and B * 3 * H * (D + H) <= 2 * SEQ_KERNEL_MAX_MACS
        mod = K if small else _numpy_kernels
        kernel = mod.classic_stream_step if self.variant == "classic" else mod.stream_step
        work = np.empty((4, B, 3 * H), dtype=dt)
        work[3] = 0  # the zero bias of a layer without bias
        wbuf = np.empty(16 * 3 * H, dtype=dt)  # room for a transposed W_ih with D < 16
        self._stream = (B, self.params, K, kernel, offs, work, np.empty((B, H), dtype=dt), wbuf)
        return self._stream

    __call__ = forward

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"GRU({args})"
