"""DP-FedAvg as a stage: clip every update, noise the sum, account the privacy spent.

McMahan et al. 2018 ("Learning Differentially Private Recurrent Language Models"); adaptive clip:
Andrew et al. 2021. The stage replaces the round's aggregator by :class:`ClippedMean` (the mean
becomes unweighted: DP bounds each client's share), and after the inner strategy's commit
steps the RDP accountant and, if asked, the adaptive clip.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..._checks import InputTypeError, InputValueError, check_int_range
from ..accountant import RDPAccountant
from ..privacy import (
    AdaptiveClip,
    check_clip,
    check_noise_multiplier,
    clip_l2,
    gaussian_mechanism,
    update_noise_multiplier,
)
from ..sampling import make_rng
from ..secagg import secure_sum
from ..strategies import RoundAggregate, Strategy
from .base import Stage
from .normalise import FedNova

#: random-stream purpose of the DP noise (sampling.py uses 0–3, attacks.py 4, compression 5)
DP_NOISE = 6


@dataclasses.dataclass(frozen=True)
class DifferentialPrivacy:
    """DP-FedAvg settings (McMahan et al. 2018; adaptive clip: Andrew et al. 2021).

    Parameters
    ----------
    clip : float
        L2 clip ``C`` of every client update (the initial clip if ``target_quantile`` is set).
    noise_multiplier : float
        ``z >= 0``: noise ``N(0, (zC)²)`` on the sum of clipped updates.
    delta : float
        The δ at which ε is reported. How each round is accounted depends on the run's client
        sampling (see :class:`DPAggregate`).
    target_quantile : float, optional
        Track this quantile of update norms with the clip (adaptive clipping); ``None``: fixed.
    clip_learning_rate : float
        ``η_C`` of the geometric clip update.
    count_stddev : float, optional
        Noise ``σ_b`` on the count of unclipped updates, needed with adaptive clipping and noise
        (Andrew et al. 2021 use ``K/20`` for ``K`` clients per round); the updates then get the
        rest of the budget, noise multiplier ``(z⁻² − (2σ_b)⁻²)^{-1/2}``.
    """

    clip: float
    noise_multiplier: float
    delta: float = 1e-5
    target_quantile: float | None = None
    clip_learning_rate: float = 0.2
    count_stddev: float | None = None

    def __post_init__(self):
        check_clip(self.clip)
        check_noise_multiplier(self.noise_multiplier)
        if not 0 < self.delta < 1:
            raise InputValueError(f"dp delta must lie in (0, 1), got {self.delta!r}")
        if self.target_quantile is not None:
            if self.noise_multiplier > 0 and self.count_stddev is None:
                raise InputValueError("adaptive clipping with noise needs count_stddev (e.g. K/20 for K "
                                 "clients per round, Andrew et al. 2021)")
            AdaptiveClip(self.clip, self.target_quantile, self.clip_learning_rate, self.count_stddev or 0.0)

    def update_noise_multiplier(self) -> float:
        """The updates' noise multiplier: ``z``, less the clip estimate's share if adaptive."""
        if self.target_quantile is None or self.noise_multiplier == 0 or self.count_stddev is None:
            return self.noise_multiplier  # (count_stddev is set whenever both are: __post_init__)
        return update_noise_multiplier(self.noise_multiplier, self.count_stddev)


class ClippedMean:
    """Unweighted mean of updates clipped to L2 norm ``clip``: DP-FedAvg's aggregate.

    The sum gets ``N(0, (zC)²)`` noise if ``noise_multiplier > 0`` and is divided by the number
    of updates in it; after :meth:`sum_securely` it goes through simulated secure aggregation
    first (clients that drop after masking leave it, listed in ``rejected``). Keeps the
    unclipped norms for adaptive clipping.
    """

    def __init__(self, size: int, clip: float, noise_multiplier: float,
                 rng: np.random.Generator, denominator: float | None = None) -> None:
        self.size, self.clip, self.noise_multiplier, self.rng = size, clip, noise_multiplier, rng
        self.denominator = denominator  # None: the number of updates summed
        self.secure = None
        self.secure_seed: tuple = ()
        self.norms: list[float] = []
        self.rejected: list[int] = []
        self._buffer: dict[int, np.ndarray] = {}
        self._sum = np.zeros(size)

    def sum_securely(self, settings, seed: tuple) -> None:
        """Sum through secure aggregation with ``settings`` (a SecureAggregation) and ``seed``."""
        if self.count:
            raise RuntimeError("sum_securely must be called before the first update is added")
        self.secure, self.secure_seed = settings, seed

    @property
    def count(self) -> int:
        """Number of updates added."""
        return len(self.norms)

    def add(self, vector: np.ndarray, weight: float = 1.0) -> None:
        """Clip and add one update (its weight is ignored: DP bounds each client's share)."""
        clipped, norm = clip_l2(np.asarray(vector, dtype=np.float64), self.clip)
        if self.secure is None:
            self._sum += clipped
        else:
            self._buffer[self.count] = clipped
        self.norms.append(norm)

    def result(self) -> np.ndarray:
        """``(Σ clip(Δ_k) + N(0, (zC)²)) / K`` over the updates that reached the sum.

        ``K`` is their number, or ``denominator`` if one was given (the expected number under
        Poisson sampling: a fixed divisor, so the released mean reveals no count).
        """
        total = self._sum
        if self.secure is not None:
            fate = np.random.default_rng(list(self.secure_seed)).random(self.count)
            gone = np.flatnonzero(fate < self.secure.dropout)
            threshold = self.count // 2 + 1  # more drop-outs than K − t cannot be recovered
            gone = gone[: self.count - threshold]
            self.rejected = [int(i) for i in gone]
            total = secure_sum(self._buffer, self.clip, seed=self.secure_seed,
                               frac_bits=self.secure.frac_bits, dropped=self.rejected)
        if self.noise_multiplier > 0:
            total = gaussian_mechanism(total, self.clip, self.noise_multiplier, self.rng)
        if self.denominator is not None:
            return total / self.denominator
        return total / (self.count - len(self.rejected))


class DPAggregate(Stage):
    """User-level differential privacy around any strategy (DP-FedAvg and its accountant).

    Each round's updates are clipped to ``C``, summed, noised with ``N(0, (zC)²)`` and
    averaged unweighted; the inner strategy's server update then applies the mean. Per round
    the history gets ``epsilon`` (at ``dp.delta``; ``None`` when ``z = 0``), ``dp_clip`` and
    ``rejected``.

    The accountant follows the run's client sampling (``Simulation(sampling=...)``):

    - ``"fixed"`` — ``m`` of ``n`` clients without replacement: the Wang, Balle and
      Kasiviswanathan 2019 bound for sampling without replacement at ``q = m / n``, under the
      replace-one relation (``n`` public), where the clipped sum's sensitivity is ``2C`` —
      noise multiplier ``z / 2`` in that analysis. The mean divides by the updates received.
    - ``"poisson"`` — each client with probability ``q``: the sampled Gaussian mechanism
      (Mironov et al. 2019) at ``q``, under add/remove-one; the mean divides by the expected
      number ``q·n`` (McMahan et al. 2018's fixed-denominator estimator).

    Either way ε is then the privacy of the run that produced it, for clients that drop out or
    fail independently of their data (that only lowers the rate). Rounds that fail (fewer than
    ``min_clients`` updates) release no model and are not accounted. Driven without a sampling
    plan (outside :class:`~npgru.fed.Simulation`), a round is accounted as Poisson-sampled at
    ``q = (updates in the aggregate) / n``.

    Parameters
    ----------
    strategy : Strategy
        The inner strategy.
    dp : DifferentialPrivacy
        Clip, noise multiplier, δ and the adaptive-clip settings.
    seed : int, default 0
        Seed of the server's noise (a stream per round).

    Raises
    ------
    ValueError
        With FedNova (``τ_eff`` depends on the clients' data sizes, so one client's influence
        is no longer bounded by the clip) or a robust aggregator.
    """

    prefix = "dp"

    def __init__(self, strategy: Strategy, dp: DifferentialPrivacy, *, seed: int = 0) -> None:
        if not isinstance(dp, DifferentialPrivacy):
            raise InputTypeError(f"dp must be a DifferentialPrivacy, got {type(dp).__name__}")
        self.dp = dp
        self.seed = check_int_range("seed", seed, 0)
        super().__init__(strategy)

    def check_compatible(self, other: Strategy, inside: bool) -> None:
        super().check_compatible(other, inside)
        if isinstance(other, FedNova):
            raise InputValueError("DP cannot be combined with FedNova: tau_eff depends on client data sizes")

    def setup(self) -> None:
        dp = self.dp
        self._accountant = RDPAccountant()
        self._adaptive = None if dp.target_quantile is None else AdaptiveClip(
            dp.clip, dp.target_quantile, dp.clip_learning_rate, dp.count_stddev or 0.0)

    @property
    def clip(self) -> float:
        """This round's clip bound (it moves with adaptive clipping)."""
        adaptive = getattr(self, "_adaptive", None)
        return self.dp.clip if adaptive is None else adaptive.clip

    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        agg = super().begin_aggregate(server_round)
        plan = getattr(self, "_sampling", None)
        denominator = plan.size if plan is not None and plan.scheme == "poisson" else None
        self._mean = ClippedMean(agg.size, self.clip, self.dp.update_noise_multiplier(),
                                 make_rng(self.seed, server_round, DP_NOISE),
                                 denominator=denominator)
        agg.delta, agg.weighted = self._mean, False
        return agg

    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        super().commit(server_round, params, agg)
        mean = self._mean
        metrics: dict = {"rejected": [agg.client_ids[i] for i in mean.rejected], "dp_clip": self.clip}
        plan, z = getattr(self, "_sampling", None), self.dp.noise_multiplier
        if plan is None:
            self._accountant.step((mean.count - len(mean.rejected)) / self._num_clients, z)
        elif plan.scheme == "poisson":
            self._accountant.step(plan.rate, z, sampling="poisson")
        else:  # replace-one: the sum's sensitivity is 2C
            self._accountant.step(plan.rate, z / 2, sampling="fixed")
        epsilon = self._accountant.epsilon(self.dp.delta)
        metrics["epsilon"] = epsilon if math.isfinite(epsilon) else None  # z = 0: no privacy
        if self._adaptive is not None:
            self._adaptive.update(np.asarray(mean.norms), mean.rng)
        self._metrics = metrics

    def own_state(self) -> dict[str, np.ndarray]:
        state = {"rdp": self._accountant.rdp.copy(), "rounds": np.array([self._accountant.steps])}
        if self._adaptive is not None:
            state["clip"] = np.array([self._adaptive.clip])
        return state

    def load_own_state(self, state: dict[str, np.ndarray]) -> None:
        self._accountant.rdp = np.array(state["rdp"], dtype=np.float64)
        self._accountant.steps = int(state["rounds"][0])
        if self._adaptive is not None:
            self._adaptive.clip = float(state["clip"][0])
