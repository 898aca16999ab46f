"""Linear, Embedding and Dropout: each a pure ``*_forward``/``*_backward`` pair and a layer.

As in CS231n's ``layers.py``: ``*_forward`` returns ``(out, cache)`` and ``*_backward(dout,
cache)`` returns the gradients in the order of the forward's arguments. The layer classes hold
the parameters (views into one flat vector, see :class:`~npgru.module.Module`) and the cache of
their last forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import StateError, as_real_array, check_positive_int, check_real_range
from .module import Module


# -- pure functions ---------------------------------------------------------------------
def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None):
    """``y = x Wᵀ + b`` over the last axis of ``x`` (any leading shape: steps, batch, …).

    Parameters
    ----------
    x : ndarray, shape (..., D)
    W : ndarray, shape (K, D)
    b : ndarray, shape (K,), or None

    Returns
    -------
    y : ndarray, shape (..., K)
    cache : tuple
    """
    # one 2-D GEMM over every leading position (a stacked matmul would be one GEMM per row
    # of the leading axis)
    y = (x.reshape(-1, x.shape[-1]) @ W.T).reshape(*x.shape[:-1], W.shape[0])
    if b is not None:
        y += b
    return y, (x, W, b is not None)


def linear_backward(dy: np.ndarray, cache):
    """Gradients of :func:`linear_forward`: ``(dx, dW, db)`` (``db`` is None without bias)."""
    x, W, has_bias = cache
    K, D = W.shape
    dy2, x2 = dy.reshape(-1, K), x.reshape(-1, D)
    dx = (dy2 @ W).reshape(*dy.shape[:-1], D)
    dW = dy2.T @ x2
    db = dy2.sum(axis=0) if has_bias else None
    return dx, dW, db


def embedding_forward(ids: np.ndarray, W: np.ndarray):
    """Look up rows of ``W``: ``out[...] = W[ids[...]]``.

    Returns
    -------
    out : ndarray, shape ids.shape + (E,)
    cache : tuple
    """
    return W[ids], (ids, W.shape)


def embedding_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Gradient of :func:`embedding_forward` with respect to ``W``.

    An id that occurs several times receives the sum of its rows' gradients; fancy-index
    assignment (``dW[ids] += dout``) would keep only one of them, ``np.add.at`` keeps all.
    """
    ids, shape = cache
    dW = np.zeros(shape, dtype=dout.dtype)
    np.add.at(dW, ids.reshape(-1), dout.reshape(-1, shape[1]))
    return dW


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator):
    """Inverted dropout: zero each entry with probability ``p`` and scale survivors by 1/(1−p).

    Returns
    -------
    out : ndarray
    mask : ndarray
        The scaled keep-mask, the cache of :func:`dropout_backward`.
    """
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient of :func:`dropout_forward`: the same mask applied to ``dout``."""
    return dout * mask


# -- layers -----------------------------------------------------------------------------
class _Layer(Module):
    """A leaf layer: remembers its last forward's cache for exactly one backward."""

    _cache: Any = None  # what the last forward keeps for backward; None once it is used

    def _take_cache(self) -> Any:
        if self._cache is None:
            raise StateError(
                f"{type(self).__name__}.backward needs a preceding forward "
                "(each forward's cache can be used by one backward only)"
            )
        cache, self._cache = self._cache, None
        return cache


class Linear(_Layer):
    """A fully connected layer ``y = x Wᵀ + b``, PyTorch's ``nn.Linear``.

    Applies to the last axis, so the same layer works on every time step ``(B, T, D)`` or on
    one state per sequence ``(B, D)``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    seed : int or None
        Seeds PyTorch's initialisation, ``U(−1/√in, 1/√in)`` for weight and bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype=np.float32, seed: int | None = None) -> None:
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.bias = bool(bias)
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.in_features)
        values = {"weight": rng.uniform(-k, k, (self.out_features, self.in_features))}
        if self.bias:
            values["bias"] = rng.uniform(-k, k, self.out_features)
        self._init_params(values, dtype)

    def forward(self, x) -> np.ndarray:
        """``x`` of shape ``(..., in_features)`` → ``(..., out_features)``."""
        x = as_real_array("x", x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have last dimension in_features={self.in_features}, got shape {x.shape}"
            )
        y, self._cache = linear_forward(x, self.params["weight"], self.params.get("bias"))
        return y

    def backward(self, dy) -> np.ndarray:
        """Fill :attr:`grads` from ``dy`` (shape of the output) and return ``dx``."""
        dx, dW, db = linear_backward(np.asarray(dy, dtype=self.dtype), self._take_cache())
        self.grads["weight"][...] = dW
        if self.bias:
            self.grads["bias"][...] = db
        return dx

    def config(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias, dtype=self.dtype.name)


class Embedding(_Layer):
    """Token ids → vectors, PyTorch's ``nn.Embedding`` (initialised ``N(0, 1)``).

    Parameters
    ----------
    num_embeddings : int
        Vocabulary size ``V``; ids must lie in ``[0, V)``.
    embedding_dim : int
    dtype : float32 or float64, default float32
    seed : int or None
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=np.float32,
                 seed: int | None = None) -> None:
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        rng = np.random.default_rng(seed)
        self._init_params(
            {"weight": rng.standard_normal((self.num_embeddings, self.embedding_dim))}, dtype
        )

    def forward(self, ids) -> np.ndarray:
        """Integer ``ids`` of any shape → ``ids.shape + (embedding_dim,)``."""
        ids = as_token_ids("ids", ids, self.num_embeddings)
        out, self._cache = embedding_forward(ids, self.params["weight"])
        return out

    def backward(self, dout) -> None:
        """Fill :attr:`grads` from ``dout``; ids have no gradient, so nothing is returned."""
        self.grads["weight"][...] = embedding_backward(
            np.asarray(dout, dtype=self.dtype), self._take_cache()
        )

    def config(self) -> dict:
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    dtype=self.dtype.name)


class Dropout(_Layer):
    """Inverted dropout in training mode, the identity in evaluation mode. No parameters.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of zeroing an entry.
    dtype : float32 or float64, default float32
    seed : int or None
        Seeds the masks: the same seed gives the same sequence of masks.
    """

    def __init__(self, p: float = 0.5, dtype=np.float32, seed: int | None = None) -> None:
        self.p = check_real_range("p", p, 0, 1, include_high=False)
        self._rng = np.random.default_rng(seed)
        self._init_params({}, dtype)

    @property
    def active(self) -> bool:
        return self.training and self.p > 0

    def forward(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        if not self.active:
            self._cache = ()
            return x
        out, mask = dropout_forward(x, self.p, self._rng)
        self._cache = (mask,)
        return out

    def backward(self, dout) -> np.ndarray:
        cache = self._take_cache()
        dout = np.asarray(dout, dtype=self.dtype)
        return dropout_backward(dout, *cache) if cache else dout

    def config(self) -> dict:
        return dict(p=self.p, dtype=self.dtype.name)


def as_token_ids(name: str, ids, vocab_size: int) -> np.ndarray:
    """``ids`` as an int64 array, refusing non-integers and ids outside ``[0, vocab_size)``."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer token ids, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(
            f"{name} must lie in [0, {vocab_size}) (the vocabulary), "
            f"got min {arr.min()} and max {arr.max()}"
        )
    return arr.astype(np.int64, copy=False)
