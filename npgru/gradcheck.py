"""Central finite differences in float64: the check every hand-written gradient must pass.

The tests and the teaching notebooks both use :func:`gradcheck`. It perturbs arrays in place,
so it works on a model's parameter views and on inputs alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


def rel_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-12) -> float:
    """Worst element-wise ``|a − n| / max(|a| + |n|, floor)``; 0 for empty arrays."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic has shape {a.shape} but numeric has shape {n.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)))


# Central-difference stencils as (k, w) pairs: f'(x) ≈ Σ w (f(x + kε) − f(x − kε)) / ε.
# Order 2: (f(x+ε) − f(x−ε)) / 2ε, truncation error O(ε²).
# Order 4: (8(f(x+ε) − f(x−ε)) − (f(x+2ε) − f(x−2ε))) / 12ε, truncation error O(ε⁴), which
# allows a larger ε and so far less round-off: small gradients are checked to ~1e-9 too.
# Differencing symmetric pairs first keeps an exactly flat f at exactly 0.
STENCILS = {
    2: ((1, 0.5),),
    4: ((1, 8 / 12), (2, -1 / 12)),
}


def numeric_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-3,
                     indices: np.ndarray | None = None, order: int = 4) -> np.ndarray:
    """Central finite differences of a scalar ``f`` with respect to ``x``.

    ``x`` is perturbed in place (and restored), so ``f`` must read it. With ``indices``
    (flat positions) only those entries are computed; the rest are NaN. ``order`` 2 is the
    textbook ``(f(x+ε) − f(x−ε)) / 2ε`` (use ε ≈ 1e-6); ``order`` 4 (default) is the
    five-point stencil, accurate with ε ≈ 1e-3.
    """
    if order not in STENCILS:
        raise ValueError(f"order must be one of {sorted(STENCILS)}, got {order!r}")
    stencil = STENCILS[order]
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 arrays, got {x.dtype}")
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so it can be perturbed in place")
    grad = np.full(flat.shape, np.nan)
    for i in range(flat.size) if indices is None else indices:
        old = flat[i]
        total = 0.0
        for k, w in stencil:
            flat[i] = old + k * eps
            f_plus = float(f())
            flat[i] = old - k * eps
            total += w * (f_plus - float(f()))
        flat[i] = old
        grad[i] = total / eps
    return grad.reshape(x.shape)


def gradcheck(f: Callable[[], float], inputs: Mapping[str, np.ndarray],
              analytic: Mapping[str, np.ndarray], eps: float = 1e-3,
              max_checks: int | None = None, seed: int = 0, order: int = 4) -> dict[str, float]:
    """Compare analytic gradients with central finite differences.

    Parameters
    ----------
    f : callable
        Returns the scalar loss from the current values of the arrays in ``inputs``.
    inputs : mapping of name -> float64 ndarray
        The arrays to perturb (in place; they are restored). Parameter views work directly.
    analytic : mapping of name -> ndarray
        The hand-written gradient of ``f`` for each name in ``inputs``.
    eps : float, default 1e-3
        Step of the central difference (about 1e-6 with ``order=2``).
    max_checks : int, optional
        Check at most this many randomly chosen entries per array (all by default).
    seed : int, default 0
        Seeds the choice of entries.
    order : {4, 2}, default 4
        Accuracy order of the central-difference stencil.

    Returns
    -------
    dict[str, float]
        The worst relative error ``|a − n| / max(|a| + |n|, 1e-12)`` per name. Below 1e-7 is
        right for smooth functions; 1e-4 and above means a bug.
    """
    missing = [k for k in inputs if k not in analytic]
    if missing:
        raise ValueError(f"analytic gradients missing for {missing}")
    rng = np.random.default_rng(seed)
    errors = {}
    for name, x in inputs.items():
        a = np.asarray(analytic[name], dtype=np.float64)
        if a.shape != x.shape:
            raise ValueError(f"analytic[{name!r}] has shape {a.shape}, expected {x.shape}")
        idx = None
        if max_checks is not None and x.size > max_checks:
            idx = rng.choice(x.size, size=max_checks, replace=False)
        n = numeric_gradient(f, x, eps, idx, order)
        sel = slice(None) if idx is None else idx
        errors[name] = rel_error(a.reshape(-1)[sel], n.reshape(-1)[sel])
    return errors


def gradcheck_gru(gru, x: np.ndarray, h0: np.ndarray | None = None, lengths=None,
                  eps: float = 1e-3, seed: int = 0, order: int = 4) -> dict[str, float]:
    """Gradcheck a float64 :class:`~npgru.GRU` on every parameter, ``x`` and ``h0``.

    The loss is ``Σ out ⊙ R + Σ h_n ⊙ S`` with fixed random ``R`` and ``S``, so every output
    and final state carries gradient. Padded outputs are constant zero, so their ``R`` entries
    do not matter. Dropout must be off (``eval()`` or ``dropout=0``).

    Returns
    -------
    dict[str, float]
        Worst relative error per parameter name, ``"x"`` and (if given) ``"h0"``.
    """
    if gru.dtype != np.float64:
        raise TypeError(f"gradcheck_gru needs a float64 GRU, got {gru.dtype}")
    x = np.array(x, dtype=np.float64)
    h0 = None if h0 is None else np.array(h0, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out, h_n = gru.forward(x, h0, lengths)
    R, S = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
    dx, dh0 = gru.backward(R, S)

    def loss() -> float:
        o, h = gru.forward(x, h0, lengths)
        return float(np.sum(o * R) + np.sum(h * S))

    inputs = {**gru.params, "x": x}
    analytic = {**{k: g.copy() for k, g in gru.grads.items()}, "x": dx}
    if h0 is not None:
        inputs["h0"], analytic["h0"] = h0, dh0
    return gradcheck(loss, inputs, analytic, eps=eps, order=order)
