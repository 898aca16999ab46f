"""The recurrence: one layer-direction's forward/backward core and the multi-layer layer, for any
:class:`~npgru.cell.Cell`.

:func:`forward_core` / :func:`backward_core` are CS231n-style: the input projection of all
steps is one GEMM, the time loop runs in the cell's kernels (one compiled call for small
shapes on the Numba backend, else a Python loop of one BLAS GEMM and one fused gate kernel per
step), and the weight gradients are one GEMM each after the reverse loop. :class:`Recurrent`
composes them over layers and directions with PyTorch's semantics (``lengths`` as packed
sequences, dropout between layers), reuses its big arrays from call to call
(:class:`_Workspace`) and streams one step at a time. Nothing here names a cell: what differs
between cells is in the :class:`~npgru.cell.Cell` they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend
from . import kernels as _numpy_kernels
from ._checks import (
    InputValueError,
    StateError,
    as_lengths,
    as_real_array,
    check_positive_int,
    check_shape,
)
from .cell import Cell
from .module import Module

# Whole-sequence compiled kernels multiply the hidden state by W_hh with loops (≈60 GFLOP/s,
# no call cost); a Python time loop around BLAS wins once a step's hidden GEMM has more than
# about this many multiply-adds (B·GH·H) or the batch grows. Measured on the GRU (thread CPU
# time, one thread): compiled is 3× faster at (B, H) = (1, 64), 2× at (1, 256), 1.15× at
# (16, 32); BLAS is 1.1–1.2× faster at (64, 32), (32, 64), (64, 64), 2× at (4, 256).
SEQ_KERNEL_MAX_MACS = 200_000
SEQ_KERNEL_MAX_BH = 1024
# With at most this many rows, the compiled products (five rows by four weight rows at a time,
# ≈80 GFLOP/s on one AVX-512 core) beat OpenBLAS at any H, which packs the whole weight matrix
# at every call to multiply it by a few rows: the paper CharLM's step (B = 10, H = 256) 49.6 →
# 37.4 ms on one thread, 43 → 33 ms with BLAS on two. At B = 16 with BLAS on two threads the
# two tie; from B = 24 BLAS wins.
SEQ_KERNEL_MAX_B = 10


def use_seq_kernel(K, B: int, G: int, H: int) -> bool:
    """Run the whole time loop in compiled code? Only on the Numba backend, for small shapes
    and for few rows."""
    return getattr(K, "COMPILED", False) and (
        B <= SEQ_KERNEL_MAX_B
        or (B * H * G * H <= SEQ_KERNEL_MAX_MACS and B * H <= SEQ_KERNEL_MAX_BH))


def use_stream_cell(K, B: int, G: int, H: int, D: int) -> bool:
    """Stream with the compiled cell (products as loops) rather than BLAS GEMMs? ``D`` is the
    widest layer input, ``max(input_size, H)``."""
    return getattr(K, "COMPILED", False) and B * G * H * (D + H) <= 2 * SEQ_KERNEL_MAX_MACS


@dataclass
class Cache:
    """What one layer-direction's backward needs from its forward."""

    cell: Cell
    x: np.ndarray  # (T, B, D) input
    arrays: dict  # the cell's states (T+1, B, H) ("hs", …; [0] initial) and saved arrays
    mask: np.ndarray | None  # (T, B) 1 while a sequence runs, None if all run T steps
    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: bool


def float_dtype(**arrays) -> np.dtype:
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


def as_kernel_array(name: str, a, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` as a C-contiguous ``dtype`` array of exactly ``shape`` (what the kernels assume)."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    check_shape(name, arr, shape)
    return np.ascontiguousarray(arr, dtype=dtype)


class _Workspace:
    """Arrays a :class:`Recurrent` layer reuses from call to call.

    A training step needs a few arrays of size T·B·GH; allocated afresh each call, every page
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


def forward_core(cell: Cell, x, state0, w_ih, w_hh, b_ih, b_hh, m2, ws, key=0):
    """One layer-direction forward, after validation: C-contiguous arrays of one float dtype
    and the right shapes, ``state0`` one (B, H) array per state of the cell, ``m2`` the
    (T, B) mask or None. With a workspace ``ws`` the cache arrays are ``ws``'s (valid until
    the next call with the same ``key``).

    Returns ``(out (T, B, H), final states (tuple), cache)``.
    """
    T, B, D = x.shape
    H, G = w_hh.shape[1], cell.gates
    dt = x.dtype
    K = _backend.kernels()
    table = K.TABLES[cell.name]
    # one GEMM for the input projection of every step
    gi = _empty(ws, "gi", (T, B, G * H), dt)
    gi2, x2 = gi.reshape(T * B, G * H), x.reshape(T * B, D)
    if b_ih is not None and D < H:
        # the bias folded into the GEMM, [x, 1]·[W_ihᵀ; b_ih]: a copy of the narrow input
        # instead of a pass over the wide output (large config: −3 % of a forward)
        xa = np.empty((T * B, D + 1), dtype=dt)
        xa[:, :D] = x2
        xa[:, D] = 1
        wa = np.empty((D + 1, G * H), dtype=dt)
        wa[:D] = w_ih.T
        wa[D] = b_ih
        np.matmul(xa, wa, out=gi2)
    else:
        np.matmul(x2, w_ih.T, out=gi2)
        if b_ih is not None:
            gi += b_ih
    # the kernels always add b_hh (a GRU's b_hn sits inside r ⊙ (·)); zeros stand for "no bias"
    bh = b_hh if b_ih is not None else np.zeros(G * H, dtype=dt)
    arrays = {}
    for s, s0 in zip(cell.states, state0, strict=True):
        a = arrays[s + "s"] = _empty(ws, (s + "s", key), (T + 1, B, H), dt)
        a[0] = s0
    for name, width in cell.saved:
        arrays[name] = _empty(ws, (name, key), (T, B, width * H), dt)
    run = table.seq_forward if use_seq_kernel(K, B, G, H) else table.forward_loop
    run(gi, w_hh, bh, m2, *arrays.values())
    hs = arrays[cell.states[0] + "s"]
    out = hs[1:] if m2 is None else hs[1:] * m2[..., None]
    final = tuple(arrays[s + "s"][T].copy() for s in cell.states)
    return out, final, Cache(cell, x, arrays, m2, w_ih, w_hh, b_ih is not None)


def backward_core(dout, dstate_n, cache: Cache, ws, grads=None):
    """One layer-direction backward, after validation (``ws`` as in :func:`forward_core`).

    ``dstate_n``: one (B, H) array or None per state; ``grads``: the arrays to write
    ``(dw_ih, dw_hh, db_ih, db_hh)`` into (the layer's gradient buffers; the biases' None
    without bias), or None for new ones. Returns ``(dx, dstate0 (tuple), dw_ih, dw_hh, db_ih,
    db_hh)``, the biases' gradients None for a layer without bias.
    """
    cell, x, arrays = cache.cell, cache.x, cache.arrays
    w_ih, w_hh = cache.w_ih, cache.w_hh
    T, B, D = x.shape
    H, G = w_hh.shape[1], cell.gates
    dt = x.dtype
    dstate_n = tuple(np.zeros((B, H), dtype=dt) if d is None else d for d in dstate_n)
    K = _backend.kernels()
    table = K.TABLES[cell.name]
    # gradients of the input pre-activations; in a workspace they take the place of the
    # forward's gi, which is dead once the forward is done
    dgi = _empty(ws, "gi", (T, B, G * H), dt)
    dgh = None
    if cell.dgh_width:
        # in the layer (one backward per forward) the cell may let dgh overwrite a saved array
        # it reads at each step before writing that step's dgh, and never again
        reuse = ws is not None and cell.dgh_reuses is not None
        dgh = arrays[cell.dgh_reuses] if reuse else np.empty((T, B, cell.dgh_width * H), dt)
    run = table.seq_backward if use_seq_kernel(K, B, G, H) else table.backward_loop
    d0 = run(dout, *dstate_n, *arrays.values(), cache.mask, w_hh, dgi, dgh)
    d0 = d0 if isinstance(d0, tuple) else (d0,)
    g2 = _flat(dgi)
    shapes = ((G * H, D), (G * H, H), (G * H,), (G * H,))
    dw_ih, dw_hh, db_ih, db_hh = (np.empty(s, dtype=dt) if a is None else a
                                  for s, a in zip(shapes, grads or (None,) * 4, strict=True))
    cell.hidden_grads(g2, None if dgh is None else _flat(dgh), arrays, dw_hh, db_hh)
    # dx = dgi · W_ih and dW_ih = Σ_t dgi_tᵀ x_t, one GEMM each
    dx = (g2 @ w_ih).reshape(T, B, D)
    np.matmul(g2.T, _flat(x), out=dw_ih)
    np.sum(g2, axis=0, out=db_ih)
    if not cache.bias:
        db_ih = db_hh = None
    return dx, d0, dw_ih, dw_hh, db_ih, db_hh


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


class Recurrent(Module):
    """A multi-layer, optionally bidirectional recurrent layer of one :class:`Cell`.

    The public layers (:class:`~npgru.GRU`, :class:`~npgru.LSTM`) are this with a cell and
    their own spelling of the states; the arguments are those of ``torch.nn.RNNBase``.

    Attributes
    ----------
    params, grads : dict[str, ndarray]
        Views into ``flat_params`` / ``flat_grads``, keyed like PyTorch's state dict.
    """

    cell: Cell

    def _setup(self, cell: Cell, input_size, hidden_size, num_layers, bias, batch_first,
               bidirectional, dropout, dtype, seed) -> None:
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.cell = cell
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout)
        self.seed = seed
        init_rng, dropout_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        self._dropout_rng = dropout_rng
        k = 1.0 / np.sqrt(self.hidden_size)
        values = {name: init_rng.uniform(-k, k, size=shape) for name, shape in self._param_shapes()}
        self._init_params(values, dtype)
        self._cache: Any = None  # what forward keeps for backward; None once used
        self._stream: Any = None  # step()'s scratch, built on its first call

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
            **self._cell_config(),
            dtype=self.dtype.name,
        )

    def _cell_config(self) -> dict:
        """Constructor arguments that choose the cell (none unless a layer has variants)."""
        return {}

    def _param_shapes(self):
        H, dirs = self.hidden_size, self.num_directions
        for k in range(self.num_layers):
            D = self.input_size if k == 0 else H * dirs
            for sfx in self._suffixes(k):
                for name, shape in self.cell.param_shapes(D, H, self.bias):
                    yield name + sfx, shape

    def _suffixes(self, layer: int):
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def _layer_params(self, sfx: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        p = self.params
        b = (p[f"bias_ih{sfx}"], p[f"bias_hh{sfx}"]) if self.bias else (None, None)
        return p[f"weight_ih{sfx}"], p[f"weight_hh{sfx}"], *b

    # -- forward / backward -------------------------------------------------------------
    def _forward(self, x, state0, lengths):
        """Run every layer; ``state0`` a tuple (one (L·dirs, B, H) array per state) or None.

        Returns ``(out, final states (tuple))``.
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
        shape = (L * dirs, B, H)
        given = state0 is not None
        if given:
            state0 = tuple(self._state_array(f"{s}0", v, shape)
                           for s, v in zip(self.cell.states, state0, strict=True))
        else:
            state0 = tuple(np.zeros(shape, dtype=self.dtype) for _ in self.cell.states)
        lengths = as_lengths(lengths, B, T)
        if lengths is not None and np.all(lengths == T):
            lengths = None  # every sequence runs the whole length: no masking needed
        m2 = None
        if lengths is not None:
            m2 = (np.arange(T)[:, None] < lengths[None, :]).astype(self.dtype)
        rev = reverse_index(lengths, T)

        caches, drop_masks = [], []
        final = tuple(np.empty(shape, dtype=self.dtype) for _ in self.cell.states)
        ws = self._workspace()
        inp = x
        for k in range(L):
            outs = []
            for d, sfx in enumerate(self._suffixes(k)):
                i = k * dirs + d
                xin = inp if d == 0 else _reverse(inp, rev)
                # everything is validated above: straight to the core, with reused arrays
                out, last, cache = forward_core(
                    self.cell, xin, [s[i] for s in state0], *self._layer_params(sfx), m2, ws,
                    key=i,
                )
                for f, v in zip(final, last, strict=True):
                    f[i] = v
                outs.append(out if d == 0 else _reverse(out, rev))
                caches.append(cache)
            inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=-1)
            drop = None
            if self.training and self.dropout > 0 and k < L - 1:
                keep = self._dropout_rng.random(inp.shape) >= self.dropout
                drop = keep.astype(self.dtype) / (1.0 - self.dropout)
                inp = inp * drop
            drop_masks.append(drop)
        self._cache = (caches, drop_masks, rev, given, (T, B))
        if self.batch_first:
            out = np.ascontiguousarray(inp.transpose(1, 0, 2))
        else:  # a view into the workspace would change under the caller at the next call
            out = inp.copy() if inp.base is not None else inp
        return out, final

    def _state_array(self, name: str, v, shape: tuple[int, ...]) -> np.ndarray:
        v = as_real_array(name, v, self.dtype, ndim=3)
        check_shape(name, v, shape)
        return v

    def _workspace(self) -> _Workspace:
        ws = getattr(self, "_ws", None)
        if ws is None:
            ws = self._ws = _Workspace()
        return ws

    def _backward(self, dout, dstate_n):
        """Backpropagate through the last forward; fills :attr:`grads`.

        ``dstate_n``: a tuple (one array or None per state) or None. Returns ``(dx, dstate0)``,
        ``dstate0`` a tuple, or None if the forward was not given initial states.
        """
        if self._cache is None:
            raise StateError(
                "backward needs a preceding forward: call forward(x) first "
                "(each forward's cache can be used by one backward only)"
            )
        caches, drop_masks, rev, given, (T, B) = self._cache
        H, dirs, L = self.hidden_size, self.num_directions, self.num_layers
        dout = as_real_array("dout", dout, self.dtype, ndim=3)
        check_shape("dout", dout, (B, T, dirs * H) if self.batch_first else (T, B, dirs * H))
        states = self.cell.states
        dstate_n = (None,) * len(states) if dstate_n is None else tuple(
            None if v is None else self._state_array(f"d{s}_n", v, (L * dirs, B, H))
            for s, v in zip(states, dstate_n, strict=True))
        self._cache = None
        if self.batch_first:
            dout = np.ascontiguousarray(dout.transpose(1, 0, 2))
        dstate0 = tuple(np.empty((L * dirs, B, H), dtype=self.dtype) for _ in states)
        g = self.grads
        names = [name for name, _ in self.cell.param_shapes(0, H, bias=True)]
        d_inp = dout
        for k in range(L - 1, -1, -1):
            if drop_masks[k] is not None:
                d_inp = d_inp * drop_masks[k]
            d_next = None
            for d, sfx in enumerate(self._suffixes(k)):
                i = k * dirs + d
                d_out = d_inp[..., d * H : (d + 1) * H]
                d_out = np.ascontiguousarray(d_out) if d == 0 else _reverse(d_out, rev)
                # the gradients go straight into the layer's buffers (no bias: none there)
                dx, d0, *_ = backward_core(
                    d_out, [None if v is None else v[i] for v in dstate_n], caches[i],
                    self._workspace(), tuple(g.get(n + sfx) for n in names),
                )
                for acc, v in zip(dstate0, d0, strict=True):
                    acc[i] = v
                dx = dx if d == 0 else _reverse(dx, rev)
                d_next = dx if d_next is None else d_next + dx
            d_inp = d_next
        dx = np.ascontiguousarray(d_inp.transpose(1, 0, 2)) if self.batch_first else d_inp
        return dx, (dstate0 if given else None)

    # -- streaming ----------------------------------------------------------------------
    def _step(self, x, states, outs):
        """One time step of every layer; ``states``/``outs`` sequences (or None) of (L, B, H)
        arrays or None, one per state of the cell. Returns the new states as a list."""
        if self.bidirectional:
            raise ValueError(
                "step() streams forward in time, so it needs bidirectional=False: the reverse "
                f"direction of a bidirectional {type(self).__name__} needs the whole sequence "
                "(use forward)"
            )
        dt, D = self.dtype, self.input_size
        # fast path for the common case (right dtype, contiguous); otherwise convert and check
        if not (type(x) is np.ndarray and x.dtype == dt and x.flags.c_contiguous):
            x = as_real_array("x", x, dt, ndim=2)
        if x.ndim != 2 or x.shape[1] != D or x.shape[0] == 0:
            raise ValueError(f"x must have shape (B, {D}) (one step, batch B ≥ 1), got {x.shape}")
        B = x.shape[0]
        K = _backend.kernels()
        st = self._stream
        if st is None or st[0] != B or st[1] is not self.params or st[2] is not K:
            st = self._stream_state(B, K)
        _, _, _, kernel, offs, work, hbuf, wbuf = st
        shape = (self.num_layers, B, self.hidden_size)
        # the common case (every state and out of the right kind) costs one test each and
        # builds nothing: a step of a small model takes a few µs in all
        for v in states + outs:
            if not (type(v) is np.ndarray and v.dtype == dt and v.flags.c_contiguous
                    and v.flags.writeable and v.shape == shape):
                states, outs = self._stream_arrays(states, outs, shape)
                break
        if not kernel(x, *states, self.flat_params, offs, *outs, work, hbuf, wbuf):
            names = " and ".join(self.cell.states)
            raise ValueError(f"x and {names} must be finite (no NaN or Inf)")
        return outs

    def _stream_arrays(self, states, outs, shape) -> tuple[list, list]:
        """:meth:`_step`'s states and outs checked and converted (zeros for a missing state, a
        new array for a missing out)."""
        dt, n = self.dtype, len(states)
        states = [_stream_in(name, v, dt, shape)
                  for name, v in zip(self.cell.states, states, strict=True)]
        outs = [_stream_out("out" if n == 1 else f"out[{k}]", v, dt, shape)
                for k, v in enumerate(outs)]
        return states, outs

    def _stream_state(self, B: int, K) -> tuple:
        """Scratch buffers, parameter offsets and the kernel for :meth:`_step`, kept while the
        batch size, the parameter views (``params`` is rebound when a model adopts the layer)
        and the backend stay the same. The kernel reads the weights from ``flat_params`` at
        these offsets, so in-place updates (optimizers, ``load_state_dict``) are seen."""
        H, G, dt, flat = self.hidden_size, self.cell.gates, self.dtype, self.flat_params
        base = flat.__array_interface__["data"][0]

        def offset(p) -> int:
            if p is None:
                return -1
            off, rem = divmod(p.__array_interface__["data"][0] - base, dt.itemsize)
            # the kernels index flat_params directly: check the view really lies inside it
            if rem or not (0 <= off and off + p.size <= flat.size and p.flags.c_contiguous):
                raise RuntimeError(f"{type(self).__name__} parameters are not contiguous views "
                                   "into flat_params")
            return off

        offs = np.empty((self.num_layers, 5), dtype=np.int64)
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(f"_l{k}")
            offs[k] = [offset(w_ih), offset(w_hh), offset(b_ih), offset(b_hh), w_ih.shape[1]]
        # the compiled kernel multiplies with loops: right for small shapes; BLAS for big ones
        if use_stream_cell(K, B, G, H, max(self.input_size, H)):
            kernel = K.TABLES[self.cell.name].stream_step
        else:  # BLAS GEMMs: the backend's own step if it has one for this cell (compiled gates)
            kernel = (getattr(K, "BLAS_STREAMS", {}).get(self.cell.name)
                      or _numpy_kernels.TABLES[self.cell.name].stream_step)
        work = np.empty((4, B, G * H), dtype=dt)
        work[3] = 0  # the zero bias of a layer without bias
        wbuf = np.empty(16 * G * H, dtype=dt)  # room for a transposed W_ih with D < 16
        hbuf = np.empty((len(self.cell.states) * B, H), dtype=dt)  # the new states, stacked
        self._stream = (B, self.params, K, kernel, offs, work, hbuf, wbuf)
        return self._stream

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _stream_in(name: str, v, dt, shape) -> np.ndarray:
    if v is None:
        return np.zeros(shape, dtype=dt)
    if not (type(v) is np.ndarray and v.dtype == dt and v.flags.c_contiguous):
        v = as_real_array(name, v, dt, ndim=3)
    if v.shape != shape:
        check_shape(name, v, shape)  # raises with the message
    return v


def _stream_out(name: str, v, dt, shape) -> np.ndarray:
    if v is None:
        return np.empty(shape, dtype=dt)
    if not (type(v) is np.ndarray and v.dtype == dt and v.flags.c_contiguous):
        raise TypeError(f"{name} must be a C-contiguous {dt} ndarray of shape {shape}")
    check_shape(name, v, shape)
    if not v.flags.writeable:  # the kernel would fail to compile a write to it
        raise InputValueError(f"{name} must be writeable: it receives the new states, got a "
                              "read-only array")
    return v
