"""User-level differential privacy for federated updates: clipping and the Gaussian mechanism.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"):
each client's delta is clipped to L2 norm ``C``, the server adds ``N(0, (z·C)² I)`` to the sum
of clipped deltas and divides by the expected number of clients. With clients sampled at rate
``q`` the round is a sampled Gaussian mechanism with noise multiplier ``z``; its privacy cost is
tracked by :mod:`npgru.fed.accountant`.

Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping") replaces the fixed ``C`` by a private estimate of the ``γ``-quantile of update norms.
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import InputValueError, check_real_range


def check_clip(clip: float) -> None:
    """Raise unless ``clip`` is a finite number > 0."""
    check_real_range("clip", clip, 0, include_low=False)


def check_noise_multiplier(noise_multiplier: float) -> None:
    """Raise unless ``noise_multiplier`` is a finite number >= 0."""
    check_real_range("noise_multiplier", noise_multiplier, 0)


def clip_l2(delta: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Scale ``delta`` so its L2 norm is at most ``clip``: ``Δ · min(1, C / ‖Δ‖)``.

    Parameters
    ----------
    delta : ndarray
        A client's flat update.
    clip : float
        The bound ``C > 0``.

    Returns
    -------
    (clipped, norm) : tuple
        A new array (``delta`` itself is not modified) and the norm before clipping.
    """
    check_clip(clip)
    norm = float(np.linalg.norm(delta))
    if not math.isfinite(norm):
        raise ValueError("delta contains NaN or Inf")
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return delta * delta.dtype.type(scale), norm


def gaussian_mechanism(
    total: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """``total + N(0, (z·C)² I)``: the noised sum of clipped updates (McMahan et al. 2018, Alg. 1).

    Parameters
    ----------
    total : ndarray
        Sum of updates each clipped to L2 norm ``clip`` (so one client changes it by at most
        ``clip``).
    clip : float
        The sensitivity ``C``.
    noise_multiplier : float
        ``z >= 0``; the noise standard deviation is ``z · C``.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray
        A new array of ``total``'s dtype.
    """
    check_clip(clip)
    check_noise_multiplier(noise_multiplier)
    noise = rng.normal(0.0, noise_multiplier * clip, size=total.shape)
    return (total + noise).astype(total.dtype, copy=False)


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """Noise multiplier left for the updates when part of the budget goes to the clip estimate.

    The clipped-count query has sensitivity 1/2 (bits centred at 0), so noise ``σ_b`` on it is a
    noise multiplier ``2σ_b``; the two Gaussian queries together equal one with multiplier ``z``
    when ``z_Δ = (z⁻² − (2σ_b)⁻²)^{-1/2}`` (Andrew et al. 2021, §3.1).

    Raises
    ------
    ValueError
        If ``2σ_b <= z``: the count alone would spend the whole budget.
    """
    check_noise_multiplier(noise_multiplier)
    if not count_stddev > 0:
        raise InputValueError(f"count_stddev must be > 0, got {count_stddev!r}")
    if noise_multiplier == 0:
        return 0.0
    if 2 * count_stddev <= noise_multiplier:
        raise InputValueError(
            f"count_stddev={count_stddev} is too small for noise_multiplier={noise_multiplier}: "
            f"need 2*count_stddev > noise_multiplier (Andrew et al. 2021, §3.1)"
        )
    return (noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5


class AdaptiveClip:
    """Private geometric tracking of the ``γ``-quantile of update norms (Andrew et al. 2021).

    Each round, with clip ``C`` and ``m`` expected clients whose (unclipped) update norms are
    ``‖Δ_k‖``::

        b̄ = (Σ_k 1[‖Δ_k‖ ≤ C] + N(0, σ_b²)) / m
        C ← C · exp(−η_C (b̄ − γ))

    Parameters
    ----------
    initial_clip : float
        ``C₀ > 0`` (the paper uses 0.1).
    target_quantile : float
        ``γ ∈ (0, 1)``, the fraction of updates that should go unclipped (paper: 0.5).
    learning_rate : float
        ``η_C > 0`` (paper: 0.2).
    count_stddev : float
        ``σ_b >= 0``, noise on the count of unclipped updates (paper: ``m / 20``); ``0`` for no
        privacy of the clip itself.
    """

    def __init__(
        self,
        initial_clip: float = 0.1,
        target_quantile: float = 0.5,
        learning_rate: float = 0.2,
        count_stddev: float = 0.0,
    ) -> None:
        check_clip(initial_clip)
        if not 0 < target_quantile < 1:
            raise InputValueError(f"target_quantile must lie in (0, 1), got {target_quantile!r}")
        if not (learning_rate > 0 and math.isfinite(learning_rate)):
            raise InputValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        if not (count_stddev >= 0 and math.isfinite(count_stddev)):
            raise InputValueError(f"count_stddev must be a finite number >= 0, got {count_stddev!r}")
        self.clip = float(initial_clip)
        self.target_quantile = float(target_quantile)
        self.learning_rate = float(learning_rate)
        self.count_stddev = float(count_stddev)

    def update(
        self, norms: np.ndarray, rng: np.random.Generator, expected_clients: float | None = None
    ) -> float:
        """Move the clip towards the target quantile of ``norms``; return the new clip.

        Parameters
        ----------
        norms : array_like
            Unclipped L2 norms of this round's updates.
        rng : numpy.random.Generator
            Source of the count noise.
        expected_clients : float, optional
            The denominator ``m`` (the expected number of clients per round); default
            ``len(norms)``.
        """
        norms = np.asarray(norms, dtype=np.float64)
        m = float(len(norms) if expected_clients is None else expected_clients)
        if not m > 0:
            raise InputValueError(f"expected_clients must be > 0, got {m}")
        unclipped = float(np.count_nonzero(norms <= self.clip))
        if self.count_stddev > 0:
            unclipped += rng.normal(0.0, self.count_stddev)
        self.clip *= math.exp(-self.learning_rate * (unclipped / m - self.target_quantile))
        return self.clip
