"""FedNova: normalised averaging for clients that take unequal numbers of local steps.

Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization". A client that takes ``τ_k`` local steps moves ``‖a_k‖₁`` times its average
gradient (``a_k`` weighs the local gradients: all ones for plain SGD), so plain FedAvg weights
fast clients by their speed and converges to the optimum of ``Σ p_k τ_k F_k`` instead of
``Σ p_k F_k``. FedNova averages the *normalised* updates and rescales by the effective step
count (§4, Eq. 8 with ``τ_eff = Σ_k p_k ‖a_k‖₁``)::

    Δ = τ_eff · Σ_k p_k Δ_k / ‖a_k‖₁

"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._checks import InputValueError, check_positive_int


def local_norm(steps: int, momentum: float = 0.0) -> float:
    """``‖a_k‖₁`` for ``steps`` local SGD steps with heavy-ball ``momentum`` ρ.

    ``τ`` for plain SGD; ``(τ − ρ(1 − ρ^τ)/(1 − ρ)) / (1 − ρ)`` with momentum (Wang et al. 2020,
    §4: step ``i`` carries weight ``(1 − ρ^i)/(1 − ρ)``).
    """
    check_positive_int("local steps", steps)
    if not 0 <= momentum < 1:
        raise InputValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


def fednova_aggregate(
    deltas: np.ndarray, steps: Sequence[int] | np.ndarray, weights: np.ndarray | None = None,
    momentum: float = 0.0
) -> np.ndarray:
    """``τ_eff Σ_k p_k Δ_k / ‖a_k‖₁`` with ``p_k = w_k / Σ w`` (default: equal weights).

    Parameters
    ----------
    deltas : ndarray, shape (K, d)
        Client updates ``θ_k − θ``.
    steps : array_like of int, shape (K,)
        Local steps ``τ_k`` each client took.
    weights : array_like, shape (K,), optional
        Example counts ``n_k`` (or any positive weights).
    momentum : float
        The clients' local SGD momentum ρ.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.ndim != 2:
        raise InputValueError(f"deltas must be a (K, d) array, got shape {deltas.shape}")
    k = deltas.shape[0]
    steps = list(np.asarray(steps).reshape(-1))
    if len(steps) != k:
        raise InputValueError(f"steps must have one entry per client ({k}), got {len(steps)}")
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or not np.all(w > 0) or not np.all(np.isfinite(w)):
        raise InputValueError(f"weights must be {k} positive finite numbers")
    p = w / w.sum()
    norms = np.array([local_norm(int(s), momentum) for s in steps])
    return float(p @ norms) * ((p / norms) @ deltas)

