"""Input validation at the public boundary, so kernels can stay lean and never read out of bounds.

Every check raises a ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, wrong
value) whose message names the argument, what was expected and what was received.
"""

from __future__ import annotations

import numpy as np


class StateError(ValueError, RuntimeError):
    """A call made in the wrong order, e.g. ``backward`` before ``forward``."""


def check_float_dtype(dtype) -> np.dtype:
    """Return ``dtype`` as a NumPy dtype if it is float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from e
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def as_real_array(name: str, a, dtype: np.dtype, ndim: int | None = None) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype``, refusing complex/object/str and NaN/Inf."""
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def check_shape(name: str, arr: np.ndarray, expected: tuple[int, ...]) -> None:
    """Raise if ``arr.shape`` differs from ``expected``."""
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {arr.shape}")


def as_lengths(lengths, batch: int, steps: int) -> np.ndarray | None:
    """Validate per-sequence lengths: integers in ``[1, steps]``, one per batch entry."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got {arr.shape}")
    if batch and (arr.min() < 1 or arr.max() > steps):
        raise ValueError(
            f"lengths must lie in [1, {steps}] (the sequence length), "
            f"got min {arr.min()} and max {arr.max()}"
        )
    return arr.astype(np.int64)


def check_positive_int(name: str, value) -> int:
    """``value`` as an int if it is a positive integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)
