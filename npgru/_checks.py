"""Input validation at the public boundary, so kernels can stay lean and never read out of bounds.

Every check raises a ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, wrong
value) whose message names the argument, what was expected and what was received; both are
:class:`InputError` subclasses, which is how the ``npgru`` command tells a refused input (one
line, exit status 2) from a bug (a traceback).
"""

from __future__ import annotations

import math
import os
from typing import overload

import numpy as np
from numpy.typing import ArrayLike


class StateError(ValueError, RuntimeError):
    """A call made in the wrong order, e.g. ``backward`` before ``forward``."""


class InputError(Exception):
    """Base of the errors that refuse a caller's input (each is also a ValueError or TypeError).

    The ``npgru`` command reports these in one line with exit status 2; any other exception is
    a bug and keeps its traceback.
    """


class InputValueError(InputError, ValueError):
    """An argument of the right kind with a value out of range (or a damaged file)."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong kind."""


def check_float_dtype(dtype) -> np.dtype:
    """Return ``dtype`` as a NumPy dtype if it is float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise InputTypeError(f"dtype must be float32 or float64, got {dtype!r}") from e
    if dt not in (np.float32, np.float64):
        raise InputTypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def as_real_array(name: str, a, dtype: np.dtype, ndim: int | None = None) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype``, refusing complex/object/str and NaN/Inf."""
    if a is None:
        raise InputTypeError(f"{name} must be an array, got None")
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise InputTypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise InputValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(arr)):
        raise InputValueError(f"{name} contains NaN or Inf")
    return arr


def check_shape(name: str, arr: np.ndarray, expected: tuple[int, ...]) -> None:
    """Raise if ``arr.shape`` differs from ``expected``."""
    if arr.shape != tuple(expected):
        raise InputValueError(f"{name} must have shape {tuple(expected)}, got {arr.shape}")


@overload
def as_lengths(lengths: None, batch: int, steps: int) -> None: ...
@overload
def as_lengths(lengths: ArrayLike, batch: int, steps: int) -> np.ndarray: ...
def as_lengths(lengths: ArrayLike | None, batch: int, steps: int) -> np.ndarray | None:
    """Validate per-sequence lengths: integers in ``[1, steps]``, one per batch entry."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise InputTypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise InputValueError(f"lengths must have shape ({batch},) (one per sequence), got {arr.shape}")
    if batch and (arr.min() < 1 or arr.max() > steps):
        raise InputValueError(
            f"lengths must lie in [1, {steps}] (the sequence length), "
            f"got min {arr.min()} and max {arr.max()}"
        )
    return arr.astype(np.int64)


def check_positive_int(name: str, value) -> int:
    """``value`` as an int if it is a positive integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise InputValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_int_range(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) in ``[low, high]``."""
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        raise InputValueError(f"{name} must be {expected}, got {value}")
    return int(value)


def check_positive_float(name: str, value, allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a real number, finite and > 0 (or None if allowed)."""
    if value is None and allow_none:
        return None
    expected = "a finite number > 0" + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float range
        x = float("inf")
    if not (np.isfinite(x) and x > 0):
        raise InputValueError(f"{name} must be {expected}, got {value!r}")
    return x


def check_real_range(name: str, value, low: float | None = None, high: float | None = None, *,
                     include_low: bool = True, include_high: bool = True) -> float:
    """``value`` as a float if it is a finite real number (not a bool) in the given interval.

    ``low``/``high`` of None leave that side unbounded (NaN and ±∞ are always refused); e.g.
    ``check_real_range("dropout", p, 0, 1, include_high=False)`` for a probability in [0, 1).
    """
    left = "" if low is None else f"{'>=' if include_low else '>'} {low}"
    right = "" if high is None else f"{'<=' if include_high else '<'} {high}"
    expected = "a real number" + (f" {left}" if left else "") + (
        f"{' and' if left else ''} {right}" if right else "")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float range
        x = math.inf
    if (not math.isfinite(x) or (low is not None and (x < low or (x == low and not include_low)))
            or (high is not None and (x > high or (x == high and not include_high)))):
        raise InputValueError(f"{name} must be {expected}, got {value!r}")
    return x


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of the strings ``choices``."""
    expected = " or ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise InputValueError(f"{name} must be {expected}, got {value!r}")
    return value


def memory_bytes() -> int:
    """This machine's physical memory in bytes (a generous bound on any one allocation)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume 1 TiB
        return 1 << 40


def check_nbytes(what: str, nbytes: float) -> None:
    """Refuse, naming ``what``, to allocate more bytes than this machine's memory.

    Called before large allocations whose size comes from the caller, so an absurd size is a
    clear error instead of a ``MemoryError`` (or the OOM killer) halfway through.
    """
    limit = memory_bytes()
    if not nbytes <= limit:
        raise InputValueError(
            f"{what} would need about {nbytes:.3g} bytes, more than this machine's memory "
            f"({limit / 2**30:.3g} GiB)"
        )
