"""Compression of client updates: what is sent up, and exactly how many bytes it takes.

- Unbiased stochastic uniform quantization to 8, 4 or 2 bits per coordinate on the vector's
  ``[min, max]`` range (Suresh et al. 2017, "Distributed Mean Estimation with Limited
  Communication", stochastic k-level quantization): ``E[decode(quantize(x))] = x``.
- Top-k sparsification: the ``k`` largest-magnitude coordinates as (int32 index, float32 value).
  Biased on its own; :class:`ErrorFeedback` keeps what was not sent in a per-client memory and adds
  it to the next update (Stich et al. 2018, "Sparsified SGD with Memory"; Karimireddy et al. 2019,
  "Error Feedback Fixes SignSGD"), which removes the bias over rounds.

Every message has ``nbytes`` (the exact payload size) and ``decode()`` (the dense float32 vector
the server reconstructs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from .._checks import InputTypeError, InputValueError
from .._registry import Registry

QUANTIZATION_BITS = (8, 4, 2)


@dataclass(frozen=True)
class QuantizedVector:
    """Codes in ``{0, …, 2^bits − 1}`` packed ``8 / bits`` to a byte, plus ``lo`` and ``step``."""

    codes: np.ndarray
    lo: np.float32
    step: np.float32
    size: int
    bits: int

    @property
    def nbytes(self) -> int:
        """Packed codes plus the two float32 scalars ``lo`` and ``step``."""
        return self.codes.nbytes + 8

    def decode(self) -> np.ndarray:
        """``lo + code · step`` as float32."""
        per_byte = 8 // self.bits
        shifts = np.arange(per_byte, dtype=np.uint8) * np.uint8(self.bits)
        codes = (self.codes[:, None] >> shifts) & np.uint8((1 << self.bits) - 1)
        codes = codes.reshape(-1)[: self.size]
        return (np.float64(self.lo) + codes * np.float64(self.step)).astype(np.float32)


@dataclass(frozen=True)
class SparseVector:
    """The kept coordinates of a vector of length ``size``: int32 indices and float32 values."""

    indices: np.ndarray
    values: np.ndarray
    size: int

    @property
    def nbytes(self) -> int:
        """4 bytes per index and 4 per value."""
        return self.indices.nbytes + self.values.nbytes

    def decode(self) -> np.ndarray:
        """The dense float32 vector, zero where nothing was sent."""
        out = np.zeros(self.size, dtype=np.float32)
        out[self.indices] = self.values
        return out


Message = QuantizedVector | SparseVector


def _as_flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype.kind != "f":
        raise InputTypeError(f"x must be a 1-D float array, got {x.dtype} array of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputValueError("x contains NaN or Inf")
    return x


def quantize(x: np.ndarray, bits: int, rng: np.random.Generator) -> QuantizedVector:
    """Stochastic uniform quantization of ``x`` to ``bits`` bits per coordinate, unbiased.

    With ``s = 2^bits − 1`` levels spaced ``step = (max − min) / s`` apart, each coordinate goes to
    the level below or above it with probabilities that make its expectation exact (Suresh et al.
    2017, §3).

    Parameters
    ----------
    x : ndarray
        Flat float vector.
    bits : {8, 4, 2}
    rng : numpy.random.Generator
        Source of the rounding randomness.
    """
    if bits not in QUANTIZATION_BITS:
        raise InputValueError(f"bits must be one of {QUANTIZATION_BITS}, got {bits!r}")
    x = _as_flat(x).astype(np.float64)
    lo = np.float32(x.min()) if x.size else np.float32(0)
    levels = (1 << bits) - 1
    step = np.float32((x.max() - lo) / levels) if x.size else np.float32(0)
    if step > 0:
        u = np.clip((x - np.float64(lo)) / np.float64(step), 0, levels)
        low = np.floor(u)
        codes = (low + (rng.random(x.size) < u - low)).astype(np.uint8)
    else:  # a constant vector: every coordinate is lo
        codes = np.zeros(x.size, dtype=np.uint8)
    per_byte = 8 // bits
    padded = np.zeros(math.ceil(x.size / per_byte) * per_byte, dtype=np.uint8)
    padded[: x.size] = codes
    shifts = np.arange(per_byte, dtype=np.uint8) * np.uint8(bits)
    packed = np.bitwise_or.reduce(padded.reshape(-1, per_byte) << shifts, axis=1).astype(np.uint8)
    return QuantizedVector(codes=packed, lo=lo, step=step, size=x.size, bits=bits)


def top_k(x: np.ndarray, fraction: float) -> SparseVector:
    """The ``k = ⌈fraction · size⌉`` largest-magnitude coordinates of ``x``.

    Parameters
    ----------
    x : ndarray
        Flat float vector.
    fraction : float
        In (0, 1]: the share of coordinates kept.
    """
    if not 0 < fraction <= 1:
        raise InputValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    x = _as_flat(x)
    k = min(x.size, max(1, math.ceil(fraction * x.size)))
    idx = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k :]).astype(np.int32)
    return SparseVector(indices=idx, values=x[idx].astype(np.float32), size=x.size)


Compressor = Callable[[np.ndarray, np.random.Generator], Message]


def _quantizer(bits: int) -> Callable[[str | None], Compressor]:
    def build(arg: str | None) -> Compressor:
        if arg is not None:
            raise InputValueError(f"q{bits} takes no parameter")
        return lambda x, rng: quantize(x, bits, rng)

    return build


def _top_k(arg: str | None) -> Compressor:
    try:
        fraction = float(arg) if arg is not None else math.nan
    except ValueError:
        fraction = math.nan
    if not 0 < fraction <= 1:
        raise InputValueError(f"topk needs a fraction in (0, 1], e.g. topk:0.01, got {arg!r}")
    return lambda x, rng: top_k(x, fraction)


#: ``npgru federate --compress`` names: name → ``f(parameter or None) -> compressor``.
COMPRESSORS: Registry = Registry("compressor")
COMPRESSORS.register("q8", _quantizer(8))
COMPRESSORS.register("q4", _quantizer(4))
COMPRESSORS.register("q2", _quantizer(2))
COMPRESSORS.register("topk", _top_k)


def make_compressor(spec: str) -> Compressor:
    """A compressor from its name in :data:`COMPRESSORS`: ``q8``, ``q4``, ``q2`` or
    ``topk:FRACTION``.

    Returns
    -------
    callable
        ``compress(x, rng) -> message``.
    """
    if not isinstance(spec, str):
        raise InputTypeError(f"compression must be a str such as 'q8', got {type(spec).__name__}")
    name, sep, arg = spec.partition(":")
    if name not in COMPRESSORS:
        raise InputValueError(f"compression must be q8, q4, q2 or topk:FRACTION, got {spec!r}")
    try:
        return COMPRESSORS[name](arg if sep else None)
    except InputValueError as e:
        raise InputValueError(f"compression {spec!r}: {e}") from None


def compress_with_feedback(
    x: np.ndarray, memory: np.ndarray | None, compress: Compressor, rng: np.random.Generator
) -> tuple[Message, np.ndarray]:
    """One error-feedback step (Stich et al. 2018, Alg. 1)::

        p = x + e;   m = compress(p);   e ← p − decode(m)

    so every coordinate's mass eventually reaches the server.

    Parameters
    ----------
    x : ndarray
        This round's update.
    memory : ndarray or None
        The client's residual ``e`` from its previous rounds (``None``: zero).
    compress : callable
        ``compress(x, rng) -> message``, e.g. from :func:`make_compressor`.
    rng : numpy.random.Generator

    Returns
    -------
    (message, memory) : tuple
        What is sent, and the new residual (``x``'s dtype).
    """
    x = _as_flat(x)
    p = x if memory is None else x + memory
    message = compress(p, rng)
    return message, (p - message.decode()).astype(x.dtype, copy=False)


class ErrorFeedback:
    """Compression with a per-client memory of what was not sent (:func:`compress_with_feedback`).

    Parameters
    ----------
    compress : callable
        ``compress(x, rng) -> message``, e.g. from :func:`make_compressor`.
    """

    def __init__(self, compress: Compressor) -> None:
        self.compress = compress
        self.memory: dict[Hashable, np.ndarray] = {}

    def __call__(self, client_id: Hashable, x: np.ndarray, rng: np.random.Generator) -> Message:
        """Compress ``x`` plus the client's memory, and keep the new residual."""
        message, self.memory[client_id] = compress_with_feedback(
            x, self.memory.get(client_id), self.compress, rng
        )
        return message
