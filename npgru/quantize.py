"""Small model files for devices: float16 or int8 weights, loaded back with NumPy alone.

Two schemes for :func:`save_quantized`:

- ``"float16"``: every parameter rounded to half precision (half the size of float32).
- ``"int8"``: every weight matrix (``weight_ih``/``weight_hh``, the head's and the embedding's
  ``weight``) quantized per output channel (per row), symmetric: ``scale = max|w_row| / 127``,
  ``q = round(w / scale)`` in ``[−127, 127]``, so ``|q·scale − w| ≤ scale / 2``. Per-row scales
  keep a row with small weights from losing its precision to the largest row of the matrix;
  symmetric (no zero point) keeps dequantization one multiply. Biases, a small fraction of the
  parameters, stay float32. About a quarter of the float32 size.

The file is an ``.npz`` (read with ``allow_pickle=False``) holding a JSON header with the model
class and its ``config()``, so :func:`load_quantized` rebuilds the model and fills it with the
dequantized weights: it then predicts with npgru's ordinary forward, no special kernels.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ._atomic import write_atomic
from .io import _READ_ERRORS, MODEL_CLASSES, read_meta, read_npz
from .module import Module

FORMAT, VERSION = "npgru-quantized", 1
SCHEMES = ("float16", "int8")
META_KEY = "__npgru__"
_QMAX = 127  # symmetric int8: −128 is left out so that the range is symmetric about zero


def quantize_int8(w) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 quantization of a matrix.

    Parameters
    ----------
    w : array_like, shape (rows, cols)
        Finite real values.

    Returns
    -------
    q : ndarray of int8, shape (rows, cols)
        ``round(w / scale)``, in ``[−127, 127]``.
    scale : ndarray of float32, shape (rows,)
        ``max|w_row| / 127`` (1 for an all-zero row, whose ``q`` is zero anyway).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"w must be a matrix (rows, cols), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("w contains NaN or Inf")
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0])
    scale = np.where(amax > 0, amax / _QMAX, 1.0).astype(np.float32)
    # divide by the float32 scale that is stored, so the bound |q·scale − w| ≤ scale/2 holds for it
    q = np.clip(np.rint(w / scale[:, None].astype(np.float64)), -_QMAX, _QMAX).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``q · scale`` row by row: the inverse of :func:`quantize_int8` up to ``scale / 2``."""
    return (q.astype(np.float64) * scale.astype(np.float64)[:, None]).astype(dtype)


def save_quantized(model: Module, path: str | os.PathLike, scheme: str = "int8") -> None:
    """Write ``model`` with ``scheme`` weights to ``path`` (atomically, no ``.npz`` appended).

    Parameters
    ----------
    model : GRU, LSTM, SequenceRegressor, SequenceClassifier or CharLM
    path : str or path-like
    scheme : {"int8", "float16"}, default "int8"

    Raises
    ------
    TypeError
        If ``model`` is not one of the supported classes.
    ValueError
        On an unknown scheme, or a parameter too large for float16 (beyond ±65504).
    """
    name = type(model).__name__
    if MODEL_CLASSES.get(name) is not type(model):
        raise TypeError(f"save_quantized supports {sorted(MODEL_CLASSES)}, got {name}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    arrays: dict[str, Any] = {}
    for key, p in model.params.items():
        if scheme == "float16":
            with np.errstate(over="ignore"):  # reported below, with the parameter's name
                half = p.astype(np.float16)
            if not np.all(np.isfinite(half)):
                raise ValueError(f"{key} has values beyond float16's range (±65504); use int8")
            arrays[f"param/{key}"] = half
        elif p.ndim == 2:
            arrays[f"q/{key}"], arrays[f"scale/{key}"] = quantize_int8(p)
        else:
            arrays[f"param/{key}"] = p.astype(np.float32)
    meta = {"format": FORMAT, "version": VERSION, "class": name, "config": model.config(),
            "scheme": scheme}
    arrays[META_KEY] = np.array([json.dumps(meta)])
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_quantized(path: str | os.PathLike, dtype=np.float32) -> Module:
    """Rebuild a model saved by :func:`save_quantized`, with dequantized weights.

    Parameters
    ----------
    path : str or path-like
    dtype : float32 or float64, default float32
        The rebuilt model's dtype.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged, holds pickled data, or is not an npgru quantized model file.
    """
    path = os.fspath(path)
    arrays = read_npz(path, "npgru quantized model file")
    try:
        meta = _parse_meta(arrays.pop(META_KEY, None))
        config = {**meta["config"], "dtype": np.dtype(dtype).name}
        model = MODEL_CLASSES[meta["class"]](**config)
        model.load_state_dict(_dequantize(arrays, model.params))
    except _READ_ERRORS + (TypeError,) as e:
        raise ValueError(f"{path} is not a valid npgru quantized model file: {e}") from e
    return model


def _dequantize(arrays: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    """The state dict stored in ``arrays``; every entry must belong to one of ``params``."""
    state, used = {}, set()
    for key in params:
        if f"param/{key}" in arrays:
            state[key] = arrays[f"param/{key}"]
            used.add(f"param/{key}")
        elif f"q/{key}" in arrays and f"scale/{key}" in arrays:
            q, scale = arrays[f"q/{key}"], arrays[f"scale/{key}"]
            if q.dtype != np.int8 or q.ndim != 2 or scale.shape != q.shape[:1]:
                raise ValueError(f"{key}: expected int8 (rows, cols) with (rows,) scales, got "
                                 f"{q.dtype} {q.shape} and {scale.shape}")
            state[key] = dequantize_int8(q, scale)
            used.update((f"q/{key}", f"scale/{key}"))
        else:
            raise ValueError(f"missing parameter {key!r}")
    extra = sorted(set(arrays) - used)
    if extra:
        raise ValueError(f"unexpected entries {extra}")
    return state


def _parse_meta(entry: np.ndarray | None) -> dict:
    meta = read_meta(entry, FORMAT, VERSION)
    if meta.get("scheme") not in SCHEMES:
        raise ValueError(f"unknown scheme {meta.get('scheme')!r}")
    return meta
