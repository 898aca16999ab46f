"""What a checkpoint must agree with to be resumed: components described, data fingerprinted.

A simulation's identity is built from what its parts say of themselves — every strategy and
stage :meth:`~npgru.fed.Strategy.describe`\\ s itself, settings become plain JSON values through
:func:`describe` — and from a fingerprint of the clients' data (:func:`data_fingerprint`), so
a resumed run refuses different data or settings and names what differs (:func:`differences`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np


def _name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def describe(value):
    """``value`` as plain JSON data (None, bool, int, float, str, list, dict) for identities.

    Numbers stay numbers (NumPy scalars become Python ones, NaN/Inf become strings), classes and
    functions become their qualified names, ``functools.partial`` objects their function with
    the bound arguments, dataclasses and mappings dicts, sets sorted lists; objects with a
    ``describe()`` method describe themselves, objects without their own ``repr`` become their
    class and public attributes; anything else becomes its ``repr``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else repr(x)
    if hasattr(value, "describe") and not isinstance(value, type):
        return value.describe()
    if isinstance(value, functools.partial):
        args = [repr(describe(a)) for a in value.args]
        args += [f"{k}={describe(v)!r}" for k, v in sorted(value.keywords.items())]
        return f"{describe(value.func)}({', '.join(args)})"
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return _name(value)
    if dataclasses.is_dataclass(value):
        return {"name": type(value).__name__,
                **{f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(describe(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "sha256": array_digest(value)}
    # (mypy sees the bound and the unbound __repr__ as different types; the check is right)
    if type(value).__repr__ is object.__repr__ and hasattr(value, "__dict__"):  # type: ignore[comparison-overlap]
        # the default repr holds a memory address: describe the class and public attributes
        return {"name": _name(type(value)),
                **{k: describe(v) for k, v in vars(value).items() if not k.startswith("_")}}
    return repr(value)


def array_digest(*arrays) -> str:
    """SHA-256 of the arrays' dtypes, shapes and bytes (``None`` entries count as absent)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.reshape(-1).view(np.uint8).data)  # the bytes, no copy; empty arrays too
    return h.hexdigest()


def data_fingerprint(clients: Sequence) -> dict:
    """Client ids, their train/test sizes in order, and one hash over every client's arrays."""
    h = hashlib.sha256()
    for c in clients:
        h.update(c.client_id.encode() + b"\0")
        h.update(array_digest(c.x_train, c.y_train, c.lengths_train,
                              c.x_test, c.y_test, c.lengths_test).encode())
    return {
        "client_ids": [c.client_id for c in clients],
        "sizes": [[int(c.num_train), int(c.num_test)] for c in clients],
        "sha256": h.hexdigest(),
    }


def _leaves(tree, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(tree, Mapping) and tree:
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, tree


def differences(saved: Mapping, current: Mapping) -> list[tuple[str, object, object]]:
    """``(dotted key, saved value, current value)`` for every leaf on which the two differ."""
    a, b = dict(_leaves(saved)), dict(_leaves(current))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
