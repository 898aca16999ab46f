"""Deprecated: the one-class ``Extended`` wrapper, now a builder of composable stages.

Privacy, secure aggregation, compression, robust aggregation, FedNova and attacks are stages
(:mod:`npgru.fed.stages`), each a strategy wrapped around another. :func:`Extended` and
:func:`from_options` still build the same stacks, with a ``DeprecationWarning``; they will be
removed in the next release.
"""

from __future__ import annotations

import warnings

from ..datasets.base import FederatedData
from .attacks import apply_attack
from .robust import check_tolerance, make_aggregator
from .sampling import clients_per_round_count
from .stages import (
    ClipDelta,
    ClippedMean,
    CompressDelta,
    DifferentialPrivacy,
    SecureAggregation,
    build_stack,
)
from .strategies import Strategy

__all__ = ["ClipDelta", "ClippedMean", "CompressDelta", "DifferentialPrivacy", "Extended",
           "SecureAggregation", "from_options"]


def _defence_stages(dp, secure_agg, compress, error_feedback, aggregator, fednova, local_momentum,
                    client_hooks, seed) -> dict:
    stages: dict = {}
    if client_hooks:
        stages["hooks"] = {"hooks": tuple(client_hooks)}
    if fednova:
        stages["fednova"] = {"local_momentum": local_momentum}
    if dp is not None:
        stages["dp"] = {"dp": dp, "seed": seed}
    if compress is not None:
        stages["compress"] = {"spec": compress, "error_feedback": error_feedback}
    if secure_agg is not None:
        stages["secure_agg"] = {"settings": secure_agg, "seed": seed}
    if aggregator != "mean":
        stages["robust"] = {"rule": aggregator}
    return stages


def Extended(strategy: Strategy, *, dp: DifferentialPrivacy | None = None,  # noqa: N802
             secure_agg: SecureAggregation | None = None, compress: str | None = None,
             error_feedback: bool = True, aggregator: str = "mean", fednova: bool = False,
             local_momentum: float = 0.0, client_hooks: tuple = (), seed: int = 0) -> Strategy:
    """Deprecated: ``strategy`` wrapped in the stages these arguments name.

    Use the stages directly (:class:`~npgru.fed.DPAggregate`, :class:`~npgru.fed.SecureAggregate`,
    :class:`~npgru.fed.Compress`, :class:`~npgru.fed.RobustAggregate`,
    :class:`~npgru.fed.FedNova`, :class:`~npgru.fed.WithHooks`) or
    :func:`~npgru.fed.build_stack`. The stack is built in the pipeline's order and is
    numerically what ``Extended`` computed.
    """
    warnings.warn("npgru.fed.Extended is deprecated and will be removed in the next release; wrap "
                  "the strategy in stages (DPAggregate, SecureAggregate, Compress, RobustAggregate, "
                  "FedNova, WithHooks) or use build_stack", DeprecationWarning, stacklevel=2)
    if aggregator != "mean":
        make_aggregator(aggregator)
    if fednova:
        from .fednova import local_norm

        local_norm(1, local_momentum)
    return build_stack(strategy, _defence_stages(dp, secure_agg, compress, error_feedback, aggregator,
                                                 fednova, local_momentum, client_hooks, seed))


def from_options(strategy: Strategy, data: FederatedData, clients_per_round: int | float, *,
                 dp_clip: float | None = None, dp_noise: float = 0.0, dp_delta: float = 1e-5,
                 secure_agg: bool = False, compress: str | None = None, aggregator: str = "mean",
                 attack: str | None = None, fednova: bool = False,
                 seed: int = 0) -> tuple[Strategy, FederatedData]:
    """Deprecated: the stack (and data) that ``npgru federate``'s options describe.

    Build the stack with :func:`~npgru.fed.build_stack` and the attack with
    :func:`~npgru.fed.attacks.apply_attack` instead.
    """
    warnings.warn("npgru.fed.from_options is deprecated and will be removed in the next release; "
                  "use build_stack and attacks.apply_attack", DeprecationWarning, stacklevel=2)
    if dp_clip is None and dp_noise:
        raise ValueError("--dp-noise needs --dp-clip (the L2 bound that sets the noise scale)")
    if secure_agg and dp_clip is None:
        raise ValueError("--secure-agg needs --dp-clip: clients clip to it so their updates fit the ring")
    dp = None if dp_clip is None else DifferentialPrivacy(dp_clip, dp_noise, dp_delta)
    hooks: tuple = ()
    if attack is not None:
        data, hooks, fraction = apply_attack(attack, data, seed)
        if aggregator != "mean":
            per_round = clients_per_round_count(clients_per_round, len(data.clients))
            check_tolerance(make_aggregator(aggregator)(1, True), per_round, round(fraction * per_round))
    stages = _defence_stages(dp, SecureAggregation() if secure_agg else None, compress, True,
                             aggregator, fednova, 0.0, hooks, seed)
    return build_stack(strategy, stages), data
