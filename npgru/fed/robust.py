"""Byzantine-robust aggregation of client updates.

Each rule is a pure function of the stacked updates ``(K, d)`` and a class with the simulator's
aggregator interface (``add(vector, weight)``, ``count``, ``result()``) that buffers the round's
updates — robust rules need all of them at once, so memory is O(K·d), not O(d) — and records which
clients it left out (``rejected``, positions in the order of :meth:`add`).

- coordinate-wise median and trimmed mean (Yin et al. 2018, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates");
- Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
  Tolerant Gradient Descent");
- norm bounding: clip every update to a fixed L2 norm, then average (Sun et al. 2019, "Can You
  Really Backdoor Federated Learning?").

Each class says how many attackers among ``K`` clients it tolerates (:meth:`tolerates`), so a
configuration with more attackers than that can be refused before anything runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._checks import InputTypeError, InputValueError, check_int_range
from .._registry import Registry
from .aggregate import WeightedMean


def _check_stack(updates: np.ndarray) -> np.ndarray:
    updates = np.asarray(updates, dtype=np.float64)
    if updates.ndim != 2 or updates.shape[0] == 0:
        raise InputValueError(f"updates must be a non-empty (K, d) array, got shape {updates.shape}")
    return updates


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """The median of each coordinate over the ``K`` updates (Yin et al. 2018, Alg. 1, option I)."""
    return np.median(_check_stack(updates), axis=0)


def trimmed_count(num_clients: int, trim: float) -> int:
    """``b = ⌊β K⌋``, the values cut from each end of every coordinate (``β ∈ [0, 1/2)``: 2b < K)."""
    if not 0 <= trim < 0.5:
        raise InputValueError(f"trim fraction must lie in [0, 0.5), got {trim!r}")
    return math.floor(trim * num_clients)


def trimmed_mean(updates: np.ndarray, trim: float) -> np.ndarray:
    """Mean of each coordinate after dropping its ``⌊trim·K⌋`` largest and smallest values.

    Yin et al. 2018, Alg. 1, option II: with ``β = trim`` it tolerates up to ``⌊βK⌋`` attackers.
    """
    updates = _check_stack(updates)
    k = updates.shape[0]
    b = trimmed_count(k, trim)
    return np.sort(updates, axis=0)[b : k - b].mean(axis=0)


def krum_scores(updates: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Krum score of each update: the sum of squared distances to its ``K − f − 2`` nearest others.

    Blanchard et al. 2017, §4: requires ``K > 2f + 2``.
    """
    updates = _check_stack(updates)
    k, f = updates.shape[0], num_byzantine
    check_int_range("num_byzantine", f, 0)
    if k <= 2 * f + 2:
        raise InputValueError(f"Krum with f={f} needs more than 2f + 2 = {2 * f + 2} clients, got {k}")
    sq = np.einsum("ij,ij->i", updates, updates)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * updates @ updates.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    nearest = np.sort(dist, axis=1)[:, : k - f - 2]
    return nearest.sum(axis=1)


def multi_krum(
    updates: np.ndarray, num_byzantine: int, num_selected: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Average of the ``m`` updates with the lowest Krum scores (``m = 1``: Krum).

    Returns
    -------
    (aggregate, selected) : tuple of ndarray
        The mean of the selected updates and their indices (ascending).
    """
    scores = krum_scores(updates, num_byzantine)
    k = scores.size
    if not 1 <= num_selected <= k - num_byzantine:
        raise InputValueError(
            f"num_selected must lie in [1, K - f] = [1, {k - num_byzantine}], got {num_selected}"
        )
    selected = np.sort(np.argsort(scores, kind="stable")[:num_selected])
    return np.asarray(updates, dtype=np.float64)[selected].mean(axis=0), selected


def norm_bounded_mean(
    updates: np.ndarray, max_norm: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clip each update to L2 norm ``max_norm``, then take the (weighted) mean (Sun et al. 2019).

    Returns
    -------
    (aggregate, clipped) : tuple of ndarray
        The mean and the indices of the updates that were scaled down.
    """
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise InputValueError(f"max_norm must be a finite number > 0, got {max_norm!r}")
    updates = _check_stack(updates)
    norms = np.linalg.norm(updates, axis=1)
    scale = np.minimum(1.0, max_norm / np.maximum(norms, np.finfo(np.float64).tiny))
    w = np.ones(len(updates)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = (w * scale) @ updates / w.sum()
    return mean, np.flatnonzero(scale < 1.0)


class RobustAggregator:
    """Buffers a round's updates and combines them with a robust rule at :meth:`result`.

    Parameters
    ----------
    size : int
        Length of every update.
    weighted : bool, default True
        Whether example counts weight the mean (only :class:`NormBound` is a mean; the other rules
        count every client once, as in their papers).

    Attributes
    ----------
    rejected : list of int
        After :meth:`result`: positions (in the order of :meth:`add`) of the updates the rule left
        out or, for :class:`NormBound`, scaled down.
    """

    def __init__(self, size: int, weighted: bool = True) -> None:
        self.size = int(size)
        self.weighted = bool(weighted)
        self._updates: list[np.ndarray] = []
        self._weights: list[float] = []
        self.rejected: list[int] = []

    @property
    def count(self) -> int:
        """Number of updates added."""
        return len(self._updates)

    def add(self, vector: np.ndarray, weight: float = 1.0) -> None:
        """Buffer one update (copied, float64)."""
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise InputValueError(f"expected a vector of shape ({self.size},), got {vector.shape}")
        if not (math.isfinite(weight) and weight > 0):
            raise InputValueError(f"weight must be positive and finite, got {weight!r}")
        self._updates.append(np.array(vector, dtype=np.float64))
        self._weights.append(float(weight) if self.weighted else 1.0)

    def result(self) -> np.ndarray:
        """The robust aggregate (float64); fills :attr:`rejected`."""
        if not self._updates:
            raise RuntimeError("no vectors were added; the aggregate is undefined")
        aggregate, rejected = self.combine(np.stack(self._updates), np.array(self._weights))
        self.rejected = [int(i) for i in rejected]
        return aggregate

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The aggregate and the positions of rejected updates."""
        raise NotImplementedError

    def tolerates(self, num_clients: int) -> int:
        """How many attackers among ``num_clients`` the rule is designed to withstand."""
        raise NotImplementedError

    @property
    def min_clients(self) -> int:
        """The fewest updates the rule can combine."""
        return 1


_NONE = np.zeros(0, dtype=np.int64)


class CoordinateMedian(RobustAggregator):
    """Coordinate-wise median; tolerates fewer than half the clients."""

    def combine(self, updates, weights):
        return coordinate_median(updates), _NONE

    def tolerates(self, num_clients):
        return (num_clients - 1) // 2


class TrimmedMean(RobustAggregator):
    """Coordinate-wise ``trim``-trimmed mean; tolerates ``⌊trim·K⌋`` attackers."""

    def __init__(self, size: int, weighted: bool = True, *, trim: float = 0.1) -> None:
        super().__init__(size, weighted)
        trimmed_count(0, trim)  # validate the fraction now
        self.trim = float(trim)

    def combine(self, updates, weights):
        return trimmed_mean(updates, self.trim), _NONE

    def tolerates(self, num_clients):
        return trimmed_count(num_clients, self.trim)


class Krum(RobustAggregator):
    """(Multi-)Krum assuming at most ``num_byzantine`` attackers; rejects the unselected."""

    def __init__(self, size: int, weighted: bool = True, *, num_byzantine: int = 1,
                 num_selected: int = 1) -> None:
        super().__init__(size, weighted)
        self.num_byzantine = check_int_range("num_byzantine", num_byzantine, 0)
        self.num_selected = check_int_range("num_selected", num_selected, 1)

    def combine(self, updates, weights):
        aggregate, selected = multi_krum(updates, self.num_byzantine, self.num_selected)
        return aggregate, np.setdiff1d(np.arange(len(updates)), selected)

    def tolerates(self, num_clients):
        if num_clients <= 2 * self.num_byzantine + 2:
            raise InputValueError(
                f"Krum with f={self.num_byzantine} needs more than {2 * self.num_byzantine + 2} "
                f"clients per round, got {num_clients}"
            )
        return self.num_byzantine

    @property
    def min_clients(self):
        """``K > 2f + 2`` (Blanchard et al. 2017) and ``m <= K − f`` for Multi-Krum."""
        return max(2 * self.num_byzantine + 3, self.num_byzantine + self.num_selected)


class NormBound(RobustAggregator):
    """Mean of updates clipped to L2 norm ``max_norm``; limits, not removes, attackers' influence."""

    def __init__(self, size: int, weighted: bool = True, *, max_norm: float = 1.0) -> None:
        super().__init__(size, weighted)
        if not (max_norm > 0 and math.isfinite(max_norm)):
            raise InputValueError(f"max_norm must be a finite number > 0, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def combine(self, updates, weights):
        return norm_bounded_mean(updates, self.max_norm, weights)

    def tolerates(self, num_clients):
        return num_clients - 1  # every attacker's pull is bounded by max_norm / K


def check_tolerance(aggregator: RobustAggregator, num_clients: int, num_attackers: int) -> None:
    """Refuse a round of ``num_clients`` with more attackers than ``aggregator`` withstands."""
    tolerated = aggregator.tolerates(num_clients)
    if num_attackers > tolerated:
        raise InputValueError(
            f"{num_attackers} attackers among {num_clients} clients per round are more than "
            f"{type(aggregator).__name__} tolerates ({tolerated}): use a stronger setting, "
            f"more clients per round or fewer attackers"
        )


def _plain(cls: type) -> Callable:
    def build(arg: str | None):
        if arg is not None:
            raise InputValueError(f"{cls.__name__} takes no parameter")
        return cls

    return build


def _with(cls: type, key: str, convert: Callable) -> Callable:
    def build(arg: str | None):
        if arg is None:
            raise InputValueError(f"{cls.__name__} needs a parameter ({key})")
        return functools.partial(cls, **{key: convert(arg)})

    return build


#: ``npgru federate --aggregator`` names: name → ``f(parameter or None) -> factory(size, weighted)``.
AGGREGATORS: Registry = Registry("aggregator")
AGGREGATORS.register("mean", _plain(WeightedMean))
AGGREGATORS.register("median", _plain(CoordinateMedian))
AGGREGATORS.register("trimmed", _with(TrimmedMean, "trim", float))
AGGREGATORS.register("krum", _with(Krum, "num_byzantine", int))
AGGREGATORS.register("normclip", _with(NormBound, "max_norm", float))


def make_aggregator(spec: str) -> Callable[..., Any]:
    """An aggregator factory ``f(size, weighted)`` from its name in :data:`AGGREGATORS`.

    ``mean``, ``median``, ``trimmed:FRACTION``, ``krum:F`` (Krum assuming ``F`` attackers) or
    ``normclip:C`` — the values of ``npgru federate --aggregator``.
    """
    if not isinstance(spec, str):
        raise InputTypeError(f"aggregator must be a str such as 'krum:2', got {type(spec).__name__}")
    name, sep, arg = spec.partition(":")
    if name not in AGGREGATORS:
        raise InputValueError(
            f"aggregator must be mean, median, trimmed:FRACTION, krum:F or normclip:C, got {spec!r}"
        )
    try:
        factory = AGGREGATORS[name](arg if sep else None)
        factory(1, True)  # validate the settings now, not mid-run
    except (ValueError, TypeError) as e:
        raise InputValueError(f"bad aggregator {spec!r}: {e}") from e
    return factory
