"""FedNova as a stage: normalise each client's delta by its local work, rescale at commit."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..client import FitRes, UnusableResult
from ..fednova import local_norm
from ..strategies import RoundAggregate, Strategy
from .base import Stage


class ScaledResult:
    """An aggregator whose :meth:`result` is another's times a factor (FedNova's ``τ_eff``)."""

    def __init__(self, aggregator, factor: float) -> None:
        self.aggregator, self.factor = aggregator, factor

    @property
    def count(self) -> int:
        """Number of updates added."""
        return self.aggregator.count

    def add(self, vector: np.ndarray, weight: float = 1.0) -> None:
        """Add to the wrapped aggregator."""
        self.aggregator.add(vector, weight)

    def result(self) -> np.ndarray:
        """The wrapped result times the factor."""
        return self.aggregator.result() * self.factor


class _Normaliser:
    """One round's transform ``Δ_k → Δ_k / ‖a_k‖₁`` and its running ``τ_eff = Σ p_k ‖a_k‖₁``."""

    def __init__(self, agg: RoundAggregate, momentum: float) -> None:
        self.agg, self.momentum = agg, momentum
        self.tau_sum = self.weight_sum = 0.0

    def __call__(self, res: FitRes) -> FitRes:
        if "steps" not in res.metrics:
            raise UnusableResult("FedNova needs each client's local step count in metrics['steps']")
        norm = local_norm(int(res.metrics["steps"]), self.momentum)
        w = float(res.num_examples) if self.agg.weighted else 1.0
        self.tau_sum += w * norm
        self.weight_sum += w
        return dataclasses.replace(res, delta=np.asarray(res.delta) / norm)

    @property
    def tau_eff(self) -> float:
        return self.tau_sum / self.weight_sum if self.weight_sum else 1.0


class FedNova(Stage):
    """Normalised averaging (Wang et al. 2020): ``Δ = τ_eff Σ_k p_k Δ_k / ‖a_k‖₁``.

    Each client's delta is divided by ``‖a_k‖₁`` (from its ``metrics["steps"]`` and the local
    momentum) before it reaches the inner aggregate, whose result is multiplied by ``τ_eff``
    before the inner strategy's server update.

    Parameters
    ----------
    strategy : Strategy
        The inner strategy.
    local_momentum : float, default 0
        The clients' SGD momentum ρ, for ``‖a_k‖₁``.
    """

    prefix = "fednova"

    def __init__(self, strategy: Strategy, *, local_momentum: float = 0.0) -> None:
        local_norm(1, local_momentum)  # validate now
        super().__init__(strategy)
        self.local_momentum = local_momentum

    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        agg = super().begin_aggregate(server_round)
        self._normaliser = _Normaliser(agg, self.local_momentum)
        agg.transforms.append(self._normaliser)
        return agg

    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        agg.delta = ScaledResult(agg.delta, self._normaliser.tau_eff)
        super().commit(server_round, params, agg)
