"""Defences as composable stages: each wraps a strategy and adds one concern.

A stack reads inside out, in the pipeline's order — client hooks (attacks) → normalise
(FedNova) → clip and privatise (DP, with its accountant) → compress → secure aggregation →
robust aggregation — and every stage commits through the strategy it wraps::

    strategy = fed.Compress(fed.DPAggregate(fed.FedAdam(), fed.DifferentialPrivacy(1.0, 0.8)), "q8")
    strategy = fed.build_stack(fed.FedAdam(), {"dp": {"dp": ...}, "compress": {"spec": "q8"}})

:data:`STAGES` names them (in that order); adding a defence is one module defining a
:class:`Stage` subclass and one ``STAGES.register`` line here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..._registry import Registry
from ..strategies import Strategy
from .base import Stage
from .compression import Compress, CompressDelta
from .hooks import WithHooks
from .normalise import FedNova
from .privacy import ClippedMean, DifferentialPrivacy, DPAggregate
from .robust import RobustAggregate
from .secure import ClipDelta, SecureAggregate, SecureAggregation

#: name → stage class, in the pipeline's order (innermost first).
STAGES: Registry = Registry("stage")
STAGES.register("hooks", WithHooks)
STAGES.register("fednova", FedNova)
STAGES.register("dp", DPAggregate)
STAGES.register("compress", Compress)
STAGES.register("secure_agg", SecureAggregate)
STAGES.register("robust", RobustAggregate)


def build_stack(strategy: Strategy, stages: Mapping[str, Mapping]) -> Strategy:
    """``strategy`` wrapped in the named stages, in the pipeline's order.

    Parameters
    ----------
    strategy : Strategy
        The innermost strategy (FedAvg, FedAdam, SCAFFOLD, …).
    stages : mapping of str to mapping
        Stage name (a key of :data:`STAGES`) → its keyword arguments besides the strategy.

    Raises
    ------
    ValueError
        On an unknown stage name or a combination a stage refuses.
    """
    for name in stages:
        STAGES.resolve(name)
    for name, cls in STAGES.items():
        if name in stages:
            strategy = cls(strategy, **stages[name])
    return strategy


__all__ = [
    "STAGES",
    "ClipDelta",
    "ClippedMean",
    "Compress",
    "CompressDelta",
    "DPAggregate",
    "DifferentialPrivacy",
    "FedNova",
    "RobustAggregate",
    "SecureAggregate",
    "SecureAggregation",
    "Stage",
    "WithHooks",
    "build_stack",
]
