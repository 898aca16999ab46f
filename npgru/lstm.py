"""The LSTM: its cell (PyTorch's ``nn.LSTM``) and the layer.

Gate blocks are stacked ``[i, f, g, o]`` as PyTorch (``weight_ih_l0`` is ``(4H, D)``)::

    i = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)   o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g                        h' = o ⊙ tanh(c')

The cell is data for :mod:`npgru.recurrence`, which runs it over layers, directions and packed
lengths (both states stop at each sequence's end) exactly as it runs the GRU; its kernels are
in :mod:`npgru.kernels` / :mod:`npgru._numba_kernels`.
"""

from __future__ import annotations

import numpy as np

from .cell import Cell, affine, affine_grads, sigmoid
from .recurrence import Recurrent


def _step_forward(x, state, p):
    """The float64 reference step: ``(h, c) -> (h', c')``."""
    h_prev, c_prev = state
    gi, gh = affine(x, h_prev, p)
    a = gi + gh
    H = h_prev.shape[1]
    i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 3 * H :])
    g = np.tanh(a[:, 2 * H : 3 * H])
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return (h, c), (x, h_prev, c_prev, p, i, f, g, o, c)


def _step_backward(dstate, cache):
    """Backward of :func:`_step_forward`: ``(dh', dc') -> (dx, (dh, dc), dp)``."""
    dh, dc = dstate
    x, h_prev, c_prev, p, i, f, g, o, c = cache
    tc = np.tanh(c)
    dc = dc + dh * o * (1 - tc * tc)
    da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                         dh * tc * o * (1 - o)], axis=1)
    dx, dh_prev, dp = affine_grads(x, h_prev, da, da, p)
    return dx, (dh_prev, dc * f), dp


def _hidden_grads(dgi, dgh, arrays, dw_hh, db_hh):
    """The hidden pre-activations are summed with the input ones: ``dgh = dgi``."""
    hs = arrays["hs"]
    np.matmul(dgi.T, hs[:-1].reshape(-1, hs.shape[2]), out=dw_hh)
    np.sum(dgi, axis=0, out=db_hh)


LSTM_CELL = Cell("lstm", gates=4, states=("h", "c"), saved=(("gates", 4),),
                 hidden_grads=_hidden_grads, step_forward=_step_forward,
                 step_backward=_step_backward)


class LSTM(Recurrent):
    """A multi-layer, optionally bidirectional LSTM with hand-written backpropagation.

    Same names, shapes, gate order (i, f, g, o), defaults, initialisation and state-dict keys
    as ``torch.nn.LSTM`` (without ``proj_size``).

    Parameters
    ----------
    input_size, hidden_size : int
    num_layers : int, default 1
    bias : bool, default True
    batch_first : bool, default False
        Input and output are ``(B, T, ·)``; the states are not affected.
    bidirectional : bool, default False
    dropout : float, default 0.0
        Dropout on the outputs of every layer but the last, in training mode only.
    dtype : float32 or float64, default float32
    seed : int or None
        Seeds the initialisation ``U(−1/√H, 1/√H)`` and the dropout masks.
    """

    cell = LSTM_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        dropout: float = 0.0,
        dtype=np.float32,
        seed: int | None = None,
    ) -> None:
        self._setup(LSTM_CELL, input_size, hidden_size, num_layers, bias, batch_first,
                    bidirectional, dropout, dtype, seed)

    def forward(self, x, hx=None, lengths=None):
        """Run the LSTM.

        Parameters
        ----------
        x : array_like, shape (T, B, D), or (B, T, D) with ``batch_first``
        hx : tuple (h0, c0) of arrays of shape (num_layers·dirs, B, H), optional
            Initial states; zeros if omitted.
        lengths : array_like of int, shape (B,), optional
            Valid steps per (right-padded) sequence, as PyTorch's packed sequences.

        Returns
        -------
        out : ndarray, shape (T, B, dirs·H) (or batch-first)
        (h_n, c_n) : tuple of ndarray, shape (num_layers·dirs, B, H)
        """
        out, state = self._forward(x, _pair("hx", hx), lengths)
        return out, state

    def backward(self, dout, dhx=None):
        """Backpropagate through the last :meth:`forward`; fills :attr:`grads`.

        Parameters
        ----------
        dout : array_like
            Gradient with respect to ``out``.
        dhx : tuple (dh_n, dc_n), optional
            Gradients with respect to ``h_n`` and ``c_n`` (either may be None).

        Returns
        -------
        dx : ndarray
        dhx0 : tuple (dh0, dc0), or None if ``hx`` was not given to :meth:`forward`.
        """
        return self._backward(dout, _pair("dhx", dhx))

    def step(self, x, hx=None, out=None):
        """Advance every layer by one time step (streaming inference), as :meth:`GRU.step`.

        Parameters
        ----------
        x : ndarray, shape (B, D)
        hx : tuple (h, c) of ndarrays of shape (num_layers, B, H), optional
            The states after the previous step; zeros if omitted.
        out : tuple (h_out, c_out), optional
            Where to write the new states (may be ``hx`` itself).

        Returns
        -------
        (h, c) : tuple of ndarray, shape (num_layers, B, H)
        """
        return tuple(self._step(x, _pair("hx", hx) or (None, None), _pair("out", out) or (None, None)))

    __call__ = forward


def _pair(name: str, v):
    """``v`` as a 2-tuple ``(h-part, c-part)``, or None."""
    if v is None:
        return None
    if not (isinstance(v, (tuple, list)) and len(v) == 2):
        raise TypeError(f"{name} must be a tuple of two arrays (h, c) or None, got {type(v).__name__}")
    return tuple(v)
