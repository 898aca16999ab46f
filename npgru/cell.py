"""What a recurrent cell is, to the recurrence that runs it: data plus a pure pair.

A :class:`Cell` declares its gate count (``weight_ih`` is ``(G·H, D)``, as PyTorch's gate-size
table in ``RNNBase``), the states it carries (``h``; ``h`` and ``c`` for an LSTM), the arrays
its forward keeps for backward, how the hidden-side weight gradients are formed, a plain
float64 step forward/backward pair (the readable reference the tests check the kernels
against), and its kernels per backend. The recurrence (:mod:`npgru.recurrence`) runs layers,
directions, lengths, workspaces and streaming through these fields and knows no cell by name.

Kernels come as a :class:`CellKernels` table per backend, keyed by the cell's name in the
backend module's ``TABLES`` (:mod:`npgru.kernels` for NumPy, :mod:`npgru._numba_kernels` for
Numba); :func:`check_tables` runs when each module is imported, so a table with a missing or
non-callable entry fails at import, never in the middle of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _backend


class CellKernels(NamedTuple):
    """One backend's kernels for one cell. Shapes: ``T`` steps, ``B`` batch, ``H`` hidden,
    ``G`` gates; ``states`` and ``saved`` are the cell's arrays in its declared order.

    seq_forward(gi, w_hh, b_hh, mask, *states, *saved)
        The whole time loop. ``gi`` (T, B, GH) is the input projection with ``b_ih``;
        ``b_hh`` (GH,) zeros for a layer without bias; ``mask`` (T, B) or None; each state
        array (T+1, B, H) holds the initial state in ``[0]`` and receives every step's.
    seq_backward(dout, *dstate_n, *states, *saved, mask, w_hh, dgi, dgh) -> dstate0
        Writes ``dgi`` (T, B, GH), the gradient of the pre-activations, and ``dgh`` (the
        hidden-side block the cell keeps, or None); returns the initial states' gradients
        (one array, or a tuple for several states).
    forward_loop, backward_loop
        The same, as a Python time loop with one BLAS GEMM per step (large shapes).
    stream_step(x, *states, flat, offs, *out, work, hbuf, wbuf) -> bool
        One step of every layer for streaming; ``False`` (nothing written) on NaN/Inf input.
    """

    seq_forward: Callable
    seq_backward: Callable
    forward_loop: Callable
    backward_loop: Callable
    stream_step: Callable


def check_tables(tables: Mapping[str, CellKernels], twins: Mapping[str, CellKernels] | None = None
                 ) -> None:
    """Refuse a kernel table with a missing or non-callable entry, or one without a twin."""
    for name, table in tables.items():
        if not isinstance(table, CellKernels):
            raise TypeError(f"kernel table {name!r} must be a CellKernels, got {type(table)}")
        for field, fn in zip(CellKernels._fields, table, strict=True):
            if not callable(fn):
                raise TypeError(f"kernel table {name!r}: {field} is not callable ({fn!r})")
    if twins is not None and set(tables) != set(twins):
        raise TypeError(f"kernel tables {sorted(tables)} and their twins {sorted(twins)} differ")


@dataclass(frozen=True)
class Cell:
    """A recurrent cell as data. See the module docstring.

    Attributes
    ----------
    name : str
        Key of the cell's kernel table in each backend module's ``TABLES``.
    gates : int
        ``G``: the stacked gate blocks of ``weight_ih``/``weight_hh``/biases.
    states : tuple of str
        The carried states, the output first: ``("h",)`` or ``("h", "c")``.
    saved : tuple of (str, int)
        Further arrays the forward keeps, ``(name, width in H)``, each ``(T, B, width·H)``.
    dgh_width : int
        Width in H of the hidden-side gradient block ``dgh`` backward keeps (0: none).
    dgh_reuses : str or None
        A saved array backward may overwrite with ``dgh`` when the layer owns the arrays.
    hidden_grads : callable
        ``(dgi, dgh, arrays, dw_hh, db_hh)`` after the backward loop writes ``dW_hh`` and
        ``db_hh`` into the arrays given (the layer's gradient buffers: no copy); ``dgi``/``dgh``
        are flattened to ``(T·B, ·)``, ``arrays`` maps state and saved names to their arrays.
    step_forward, step_backward : callable
        The float64 reference of one step: ``step_forward(x, state, p) -> (state', cache)``
        and ``step_backward(dstate', cache) -> (dx, dstate, dp)``, ``state`` a tuple, ``p`` a
        dict with ``weight_ih``, ``weight_hh`` and (optionally) ``bias_ih``, ``bias_hh``.
    """

    name: str
    gates: int
    states: tuple[str, ...]
    saved: tuple[tuple[str, int], ...]
    hidden_grads: Callable
    step_forward: Callable
    step_backward: Callable
    dgh_width: int = 0
    dgh_reuses: str | None = None

    def kernels(self) -> CellKernels:
        """This cell's kernel table on the active backend."""
        return _backend.kernels().TABLES[self.name]

    def param_shapes(self, D: int, H: int, bias: bool):
        """``(name, shape)`` of one layer-direction's parameters, PyTorch's names."""
        G = self.gates
        yield "weight_ih", (G * H, D)
        yield "weight_hh", (G * H, H)
        if bias:
            yield "bias_ih", (G * H,)
            yield "bias_hh", (G * H,)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, for the float64 reference steps (no overflow for large ``|x|``)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def affine(x, h, p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The two pre-activations of a reference step: ``x W_ihᵀ + b_ih`` and ``h W_hhᵀ + b_hh``."""
    gi, gh = x @ p["weight_ih"].T, h @ p["weight_hh"].T
    if "bias_ih" in p:
        gi, gh = gi + p["bias_ih"], gh + p["bias_hh"]
    return gi, gh


def affine_grads(x, h, dgi, dgh, p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Backward of :func:`affine`: ``(dx, dh, dp)`` from the pre-activations' gradients."""
    dp = {"weight_ih": dgi.T @ x, "weight_hh": dgh.T @ h}
    if "bias_ih" in p:
        dp["bias_ih"], dp["bias_hh"] = dgi.sum(axis=0), dgh.sum(axis=0)
    return dgi @ p["weight_ih"], dgh @ p["weight_hh"], dp
