"""Rényi-DP accountant for the sampled Gaussian mechanism (the privacy cost of DP-FedAvg).

One DP-FedAvg round (McMahan et al. 2018) is a sampled Gaussian mechanism: every client is in
the round with probability ``q`` and the sum of clipped updates gets Gaussian noise of standard
deviation ``z · C``. Its Rényi-DP at order ``α`` is ``log(A_α) / (α − 1)`` (Mironov, Talwar and
Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3), RDP adds up
over rounds, and the total converts to ``(ε, δ)``-DP by minimising over the orders.

Everything is in log space with the standard library only (``math.lgamma``, ``math.erfc``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._checks import check_int_range

#: Orders α at which RDP is tracked: dense where the optimum lies for practical (q, z), sparse
#: far out (the grid Mironov et al. 2019 and TensorFlow Privacy use).
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
)


def _log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow."""
    hi, lo = max(a, b), min(a, b)
    if lo == -math.inf:
        return hi
    return hi + math.log1p(math.exp(lo - hi))


def _log_abs_binom(alpha: float, k: int) -> float:
    """``log |C(α, k)|`` for real ``α`` and integer ``k ≥ 0`` (the generalised binomial)."""
    return math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)


def _log_erfc(x: float) -> float:
    """``log(erfc(x))``, accurate where ``erfc`` underflows (x ≳ 26)."""
    if x < 25.0:
        return math.log(math.erfc(x))
    # asymptotic expansion erfc(x) ~ exp(−x²) / (x √π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶))
    inv2 = 1.0 / (x * x)
    series = 1.0 - inv2 / 2 + 3 * inv2**2 / 4 - 15 * inv2**3 / 8
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series)


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    """``log A_α`` for integer ``α`` (Mironov et al. 2019, §3.2, the binomial expansion)."""
    log_a = -math.inf
    for k in range(alpha + 1):
        term = (
            _log_abs_binom(alpha, k)
            + k * math.log(q)
            + (alpha - k) * math.log1p(-q)
            + (k * k - k) / (2 * sigma**2)
        )
        log_a = _log_add(log_a, term)
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float, max_terms: int = 1000) -> float:
    """``log A_α`` for fractional ``α`` (Mironov et al. 2019, §3.3).

    ``A_α`` splits at ``z₀ = σ² log(1/q − 1) + 1/2`` into two integrals, each an infinite series
    in the generalised binomial coefficients. Terms are summed in absolute value, which bounds
    ``A_α`` from above (so ε is never under-reported); the series stops once both partial sums'
    terms are decreasing and ``e^{-30}`` below the total.
    """
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log_q, log_1mq = math.log(q), math.log1p(-q)
    log_a0 = log_a1 = -math.inf
    last0 = last1 = -math.inf
    for k in range(max_terms):
        j = alpha - k
        coef = _log_abs_binom(alpha, k)
        s0 = (
            coef + k * log_q + j * log_1mq + (k * k - k) / (2 * sigma**2)
            + math.log(0.5) + _log_erfc((k - z0) / (math.sqrt(2) * sigma))
        )
        s1 = (
            coef + j * log_q + k * log_1mq + (j * j - j) / (2 * sigma**2)
            + math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        )
        log_a0, log_a1 = _log_add(log_a0, s0), _log_add(log_a1, s1)
        total = _log_add(log_a0, log_a1)
        if s0 < last0 and s1 < last1 and max(s0, s1) < total - 30:
            return total
        last0, last1 = s0, s1
    return math.inf  # did not converge: this order gives no bound


def _check_q_z(q: float, noise_multiplier: float) -> None:
    if not 0 < q <= 1:
        raise ValueError(f"sampling rate q must lie in (0, 1], got {q!r}")
    if not noise_multiplier >= 0 or math.isinf(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")


def _check_orders(orders: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(orders, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(arr > 1) or not np.all(np.isfinite(arr)):
        raise ValueError("orders must be a non-empty 1-D sequence of finite numbers > 1")
    return arr


def rdp_sampled_gaussian(
    q: float, noise_multiplier: float, orders: Sequence[float] | np.ndarray = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP of one step of the sampled Gaussian mechanism at each order.

    Parameters
    ----------
    q : float
        Sampling rate in (0, 1]: each client takes part independently with probability ``q``.
    noise_multiplier : float
        ``z = σ / C``, the noise standard deviation over the L2 sensitivity. ``0`` means no
        privacy (RDP ``inf``).
    orders : sequence of float
        Rényi orders ``α > 1``.

    Returns
    -------
    ndarray
        ``ε_RDP(α)`` for each order.
    """
    _check_q_z(q, noise_multiplier)
    alphas = _check_orders(orders)
    if noise_multiplier == 0:
        return np.full(alphas.shape, np.inf)
    if q == 1:  # the plain Gaussian mechanism: α / (2 z²) (Mironov 2017, Prop. 7)
        return alphas / (2 * noise_multiplier**2)
    out = np.empty_like(alphas)
    for i, a in enumerate(alphas):
        log_a = (
            _log_a_int(q, noise_multiplier, int(a))
            if float(a).is_integer()
            else _log_a_frac(q, noise_multiplier, float(a))
        )
        out[i] = log_a / (a - 1)
    return out


def epsilon_from_rdp(
    orders: Sequence[float] | np.ndarray, rdp: Sequence[float] | np.ndarray, delta: float
) -> tuple[float, float]:
    """The smallest ε such that the RDP curve implies ``(ε, δ)``-DP, and the order giving it.

    Uses the conversion ``ε = ε_RDP(α) + log(1 − 1/α) − (log δ + log α) / (α − 1)``
    (Canonne, Kamath and Steinke 2020, Prop. 12; Balle et al. 2020, Thm. 21), tighter than the
    classic ``ε_RDP(α) + log(1/δ) / (α − 1)`` (Mironov 2017, Prop. 3).

    Parameters
    ----------
    orders, rdp : sequences of float
        The accumulated RDP at each order.
    delta : float
        Target δ in (0, 1).

    Returns
    -------
    (epsilon, order) : tuple of float
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    alphas = _check_orders(orders)
    rdp_arr = np.asarray(rdp, dtype=np.float64)
    if rdp_arr.shape != alphas.shape:
        raise ValueError(f"rdp must have one value per order ({alphas.size}), got shape {rdp_arr.shape}")
    eps = rdp_arr + np.log1p(-1 / alphas) - (math.log(delta) + np.log(alphas)) / (alphas - 1)
    i = int(np.argmin(eps))
    return max(0.0, float(eps[i])), float(alphas[i])


class RDPAccountant:
    """Accumulates the RDP of sampled Gaussian steps and reports ε at a given δ.

    Parameters
    ----------
    orders : sequence of float
        Rényi orders ``α > 1`` to track.

    Examples
    --------
    >>> acc = RDPAccountant()
    >>> acc.step(q=0.01, noise_multiplier=1.1, steps=1000)
    >>> round(acc.epsilon(1e-5), 2)
    1.71
    """

    def __init__(self, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
        self.orders = _check_orders(orders)
        self.rdp = np.zeros_like(self.orders)
        self.steps = 0
        self._per_step: dict[tuple[float, float], np.ndarray] = {}  # a run repeats one (q, z)

    def step(self, q: float, noise_multiplier: float, steps: int = 1) -> None:
        """Compose ``steps`` rounds at sampling rate ``q`` and noise multiplier ``z``."""
        check_int_range("steps", steps, 0)
        key = (float(q), float(noise_multiplier))
        if key not in self._per_step:
            self._per_step[key] = rdp_sampled_gaussian(q, noise_multiplier, self.orders)
        if steps:  # (0 · inf would be nan)
            self.rdp = self.rdp + steps * self._per_step[key]
            self.steps += int(steps)

    def epsilon(self, delta: float) -> float:
        """ε of everything composed so far, at ``delta`` (0 before any step)."""
        if self.steps == 0:
            return 0.0
        return epsilon_from_rdp(self.orders, self.rdp, delta)[0]
