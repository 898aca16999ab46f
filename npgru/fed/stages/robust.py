"""Byzantine-robust aggregation as a stage: a robust rule replaces the round's mean."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..._checks import InputTypeError, InputValueError
from ..identity import describe
from ..robust import make_aggregator
from ..strategies import RoundAggregate, Strategy
from .base import Stage
from .privacy import DPAggregate
from .secure import SecureAggregate


class RobustAggregate(Stage):
    """Combine the round's deltas with a robust rule before the inner strategy's server update.

    Per round the history gets ``rejected``: the clients the rule left out (or, for norm
    bounding, scaled down).

    Parameters
    ----------
    strategy : Strategy
        The inner strategy.
    rule : str or callable
        ``median``, ``trimmed:FRACTION``, ``krum:F``, ``normclip:C`` (or ``mean``), or any
        aggregator factory ``f(size, weighted)`` such as ``functools.partial(Krum,
        num_byzantine=2)``.

    Raises
    ------
    ValueError
        With DP or secure aggregation: one client's influence is no longer bounded by the
        clip, and the server cannot see individual updates.
    """

    prefix = "robust"

    def __init__(self, strategy: Strategy, rule: str | Callable) -> None:
        factory: Callable[..., Any]
        if isinstance(rule, str):
            factory = make_aggregator(rule)
        elif callable(rule):
            factory = rule
            factory(1, True)  # validate the settings now, not mid-run
        else:
            raise InputTypeError(f"rule must be an aggregator name or factory, got {type(rule).__name__}")
        self.rule, self._factory = rule, factory
        super().__init__(strategy)

    def check_compatible(self, other: Strategy, inside: bool) -> None:
        super().check_compatible(other, inside)
        if isinstance(other, (DPAggregate, SecureAggregate)):
            raise InputValueError(f"aggregator {describe(self.rule)!r} cannot be combined with DP or "
                             "secure aggregation")

    @property
    def own_min_clients(self) -> int:
        """What the rule needs (Krum: ``2f + 3``)."""
        return getattr(self._factory(1, True), "min_clients", 1)

    def tolerates(self, num_clients: int) -> int:
        """How many attackers among ``num_clients`` per round the rule withstands."""
        return self._factory(1, True).tolerates(num_clients)

    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        agg = super().begin_aggregate(server_round)
        self._aggregator = agg.delta = self._factory(agg.size, agg.weighted)
        return agg

    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        super().commit(server_round, params, agg)
        positions = getattr(self._aggregator, "rejected", [])
        self._metrics = {"rejected": [agg.client_ids[i] for i in positions]}
