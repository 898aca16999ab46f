"""Rényi-DP accountant for the sampled Gaussian mechanism (the privacy cost of DP-FedAvg).

One DP-FedAvg round (McMahan et al. 2018) is a subsampled Gaussian mechanism: a sample of the
clients is drawn and the sum of their clipped updates gets Gaussian noise of standard deviation
``z · C``. How the sample is drawn decides the analysis:

- **Poisson sampling** (every client joins independently with probability ``q``; neighbouring
  datasets differ by adding or removing one client): Rényi-DP at order ``α`` is
  ``log(A_α) / (α − 1)`` (Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy of the
  Sampled Gaussian Mechanism", §3) — :func:`rdp_sampled_gaussian`.
- **Sampling without replacement** (a uniform subset of fixed size ``m`` of ``n`` clients;
  neighbouring datasets differ by replacing one client, ``n`` is public): the bound of Wang,
  Balle and Kasiviswanathan 2019 ("Subsampled Rényi Differential Privacy and Analytical
  Moments Accountant", Theorem 27 for mechanisms like the Gaussian, interpolated between
  integer orders by their Corollary 10) — :func:`rdp_sampled_without_replacement_gaussian`.

RDP adds up over rounds, and the total converts to ``(ε, δ)``-DP by minimising over the orders.

Everything is in log space with the standard library only (``math.lgamma``, ``math.erfc``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._checks import InputValueError, check_int_range

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


#: Above this order the Theorem 27 bound's O(α²) forward differences are replaced by its
#: simpler, looser term ``2 e^{(j−1) ε(j)}`` (as dp-accounting does).
_WOR_EXACT_MAX_ORDER = 256


def _log_forward_differences(log_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log |Δ^k f(0)|, sign Δ^k f(0))`` for ``k = 0 … len(log_f) − 1``, from ``log f(x)``.

    Repeated differencing of a signed vector held as sign and log-magnitude, so that nothing
    overflows; a difference that is exactly zero has sign 0 and log-magnitude ``-inf``.
    """
    out_log, out_sign = np.empty(log_f.size), np.empty(log_f.size)
    logs = np.array(log_f, dtype=np.float64)
    signs = np.ones(logs.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(log_f.size):
            out_log[k], out_sign[k] = logs[0], signs[0]
            la, sa, lb, sb = logs[1:], signs[1:], logs[:-1], signs[:-1]  # a − b
            top = np.maximum(la, lb)
            gap = np.abs(la - lb)
            gap = np.where(np.isnan(gap), 0.0, gap)  # both −inf: 0 − 0
            same = sa == sb
            logs = np.where(same, top + np.log(-np.expm1(-gap)), top + np.log1p(np.exp(-gap)))
            signs = np.where(same, sa * np.sign(la - lb), np.where(sa != 0, sa, -sb))
            signs = np.where(np.isneginf(logs) | np.isnan(signs), 0.0, signs)
            logs = np.where(signs == 0, -np.inf, logs)
    return out_log, out_sign


def _wor_log_moments(q: float, sigma: float, alphas: Sequence[int]) -> dict[int, float]:
    """``log`` of Wang et al.'s Theorem 27 bound on the order-``α`` moment, per integer ``α``.

    With the Gaussian's RDP ``ε(x) = x / (2σ²)``, ``f(x) = e^{(x−1) ε(x)}`` and ``Δ^k`` its
    forward differences at 0, for integer ``α ≥ 2``::

        A_α ≤ 1 + q² C(α,2) min(4 (e^{ε(2)} − 1), 2 e^{ε(2)})
                + Σ_{j=3}^{α} q^j C(α,j) min(4 √(Δ^{2⌊j/2⌋} Δ^{2⌈j/2⌉}), 2 e^{(j−1) ε(j)})

    (above order :data:`_WOR_EXACT_MAX_ORDER` only the second term of each minimum is used).
    """
    top = max(alphas)
    x = np.arange(top + 1, dtype=np.float64)
    log_f = (x - 1) * x / (2 * sigma**2)  # log f(x) = (x − 1) ε(x)
    deltas, signs = _log_forward_differences(log_f[: min(top, _WOR_EXACT_MAX_ORDER) + 2])
    # the bound holds with these differences non-negative; one rounding made negative is left
    # out of the minimum (the other term is always a valid bound)
    deltas = np.where(signs < 0, np.inf, deltas)
    eps2 = 1 / sigma**2
    loose = math.log(2) + log_f  # 2 e^{(j−1) ε(j)}
    loose[2] = min(math.log(4) + eps2 + math.log(-math.expm1(-eps2)), math.log(2) + eps2)
    exact = loose.copy()
    for i in range(3, min(top, _WOR_EXACT_MAX_ORDER) + 1):
        lo, hi = deltas[2 * (i // 2)], deltas[2 * ((i + 1) // 2)]
        exact[i] = min(loose[i], math.log(4) + 0.5 * (lo + hi))
    log_factorial = np.cumsum(np.log(np.maximum(x, 1)))  # log x!
    out = {}
    for alpha in alphas:
        if alpha < 2:
            out[alpha] = 0.0
            continue
        j = np.arange(2, alpha + 1)
        terms = exact if alpha <= _WOR_EXACT_MAX_ORDER else loose
        logs = (terms[j] + j * math.log(q)
                + log_factorial[alpha] - log_factorial[j] - log_factorial[alpha - j])
        peak = float(logs.max())  # log(1 + Σ e^{logs}), accurate when the sum is tiny
        out[alpha] = _log_add(0.0, peak + math.log(float(np.exp(logs - peak).sum())))
    return out


def rdp_sampled_without_replacement_gaussian(
    q: float, noise_multiplier: float, orders: Sequence[float] | np.ndarray = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP of the Gaussian mechanism on a sample drawn without replacement, at each order.

    The bound of Wang, Balle and Kasiviswanathan 2019, Theorem 27, for a uniformly random
    subset of ``m = q·n`` of ``n`` records under the *replace-one* neighbouring relation;
    fractional orders interpolate the log moments linearly between the neighbouring integers
    (their Corollary 10). Matches ``dp_accounting``'s ``SampledWithoutReplacementDpEvent``.

    Parameters
    ----------
    q : float
        Sampling proportion ``m / n`` in (0, 1].
    noise_multiplier : float
        The noise standard deviation over the L2 sensitivity *under replacement of one
        record*: for a sum of updates clipped to ``C`` that sensitivity is ``2C``, so DP-FedAvg
        with noise ``σ = zC`` has noise multiplier ``z / 2`` here. ``0``: no privacy (``inf``).
    orders : sequence of float
        Rényi orders ``α > 1``.

    Returns
    -------
    ndarray
        ``ε_RDP(α)`` for each order (``inf`` at orders the bound does not cover).
    """
    _check_q_z(q, noise_multiplier)
    alphas = _check_orders(orders)
    if noise_multiplier == 0:
        return np.full(alphas.shape, np.inf)
    if q == 1:  # no amplification: the Gaussian mechanism itself
        return alphas / (2 * noise_multiplier**2)
    needed = sorted({math.floor(a) for a in alphas} | {math.ceil(a) for a in alphas})
    log_a = _wor_log_moments(q, noise_multiplier, needed)
    out = np.empty_like(alphas)
    for i, a in enumerate(alphas):
        lo, t = math.floor(a), a - math.floor(a)
        moment = log_a[lo] if t == 0 else (1 - t) * log_a[lo] + t * log_a[lo + 1]
        out[i] = moment / (a - 1)
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


#: The sampling schemes the accountant analyses, each by its own bound.
SAMPLINGS = ("poisson", "fixed")


class RDPAccountant:
    """Accumulates the RDP of sampled Gaussian steps and reports ε at a given δ.

    Each step is analysed for how its sample was drawn: ``sampling="poisson"`` with
    :func:`rdp_sampled_gaussian`, ``sampling="fixed"`` (without replacement) with
    :func:`rdp_sampled_without_replacement_gaussian`. A run should keep to one scheme: the two
    bound privacy under different neighbouring relations (add/remove one client, replace one).

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
        self._per_step: dict[tuple, np.ndarray] = {}  # a run repeats one (q, z)

    def step(self, q: float, noise_multiplier: float, steps: int = 1, *,
             sampling: str = "poisson") -> None:
        """Compose ``steps`` rounds at sampling rate ``q`` and noise multiplier ``z``.

        ``sampling`` is ``"poisson"`` (``q`` the inclusion probability) or ``"fixed"`` (``q``
        the sample's share ``m / n``, ``z`` relative to the replace-one sensitivity).
        """
        check_int_range("steps", steps, 0)
        if sampling not in SAMPLINGS:
            raise InputValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        key = (float(q), float(noise_multiplier), sampling)
        if key not in self._per_step:
            rdp = (rdp_sampled_gaussian if sampling == "poisson"
                   else rdp_sampled_without_replacement_gaussian)
            self._per_step[key] = rdp(q, noise_multiplier, self.orders)
        if steps:  # (0 · inf would be nan)
            self.rdp = self.rdp + steps * self._per_step[key]
            self.steps += int(steps)

    def epsilon(self, delta: float) -> float:
        """ε of everything composed so far, at ``delta`` (0 before any step)."""
        if self.steps == 0:
            return 0.0
        return epsilon_from_rdp(self.orders, self.rdp, delta)[0]
