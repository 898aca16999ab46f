"""Which kernels run: the Numba ones when Numba is importable and enabled, else the NumPy twins.

One switch: the environment variable ``NPGRU_BACKEND=numpy|numba`` (read at import), or
:func:`set_backend` at run time. Numba is imported lazily, on the first kernel call, so
``import npgru`` stays cheap and works with NumPy alone.
"""

from __future__ import annotations

import importlib
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


_numba_ok: bool | None = None  # cached: a failed import is slow to retry on every call


def numba_available() -> bool:
    """True if Numba can be imported (imports it on the first call, not at ``import npgru``)."""
    global _numba_ok
    if _numba_ok is None:
        try:
            import numba  # noqa: F401

            _numba_ok = True
        except Exception:
            _numba_ok = False
    return _numba_ok


def get_backend() -> str:
    """The backend in use: ``"numba"`` or ``"numpy"``."""
    if _requested is not None:
        return _requested
    return "numba" if numba_available() else "numpy"


_modules: dict[str, ModuleType] = {}  # imported once: kernels() runs on every forward/step


def kernels() -> ModuleType:
    """The module holding the active backend's kernels: :mod:`npgru._numba_kernels` or the
    NumPy twins in :mod:`npgru.kernels`. The Numba module is imported on first use only;
    its functions compile on their first call (and load from the on-disk cache after that)."""
    name = get_backend()
    if name not in _modules:
        if name == "numba":
            if not numba_available():  # NPGRU_BACKEND=numba without numba installed
                raise ImportError("backend 'numba' requested (NPGRU_BACKEND or set_backend) but "
                                  "numba cannot be imported; install numba or use 'numpy'")
        _modules[name] = importlib.import_module(
            "._numba_kernels" if name == "numba" else ".kernels", __package__)
    return _modules[name]


_requested = _parse(os.environ.get("NPGRU_BACKEND"))
