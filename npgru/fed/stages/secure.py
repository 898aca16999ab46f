"""Simulated secure aggregation as a stage (Bonawitz et al. 2017, :mod:`npgru.fed.secagg`).

Clients clip their update (so every coordinate fits the fixed-point ring) and the server only
learns the sum of the masked updates; clients that drop after masking leave the sum through
their secret-shared keys. Wrapped around :class:`~npgru.fed.DPAggregate`, the DP noise is added
to the secure sum and the DP clip is the ring's bound.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..._checks import InputTypeError, InputValueError, check_int_range
from ..client import ClientHook, HookContext
from ..privacy import check_clip, clip_l2
from ..sampling import make_rng
from ..secagg import FixedPointRing, client_upload_nbytes
from ..strategies import RoundAggregate, Strategy
from .base import SideBytes, Stage
from .compression import Compress
from .privacy import DP_NOISE, ClippedMean, DPAggregate

#: random-stream purpose of the secure-aggregation masks and drop-outs
SECURE_AGG = 7


@dataclasses.dataclass(frozen=True)
class SecureAggregation:
    """Simulated secure aggregation settings (Bonawitz et al. 2017, :mod:`npgru.fed.secagg`).

    Parameters
    ----------
    clip : float, optional
        Clients clip their update to this L2 norm, which bounds every coordinate for the ring;
        with DP it must be left unset (the DP clip is used).
    frac_bits : int
        Fixed-point precision: each coordinate of the sum is exact to ``K · 2^{−frac_bits−1}``.
    dropout : float
        Probability that a client drops out after masking (its masks are then removed through
        the secret-shared keys).
    """

    clip: float | None = None
    frac_bits: int = 16
    dropout: float = 0.0

    def __post_init__(self):
        if self.clip is not None:
            check_clip(self.clip)
        check_int_range("frac_bits", self.frac_bits, 0)
        if not 0 <= self.dropout < 1:
            raise InputValueError(f"secure aggregation dropout must lie in [0, 1), got {self.dropout!r}")


class ClipDelta(ClientHook):
    """Clip the delta to L2 norm ``clip`` on the client (needed before secure aggregation)."""

    def __init__(self, clip: float) -> None:
        self.clip = clip

    def on_delta(self, delta: np.ndarray, ctx: HookContext) -> None:
        delta[...] = clip_l2(delta, self.clip)[0]


class SecureAggregate(Stage):
    """Sum the round's clipped updates through simulated secure aggregation.

    The mean becomes unweighted. Per round the history gets ``rejected`` (clients that dropped
    after masking) and ``bytes_up`` (masked uploads and the key shares, exactly).

    Parameters
    ----------
    strategy : Strategy
        The inner strategy; if it contains a :class:`~npgru.fed.DPAggregate`, its clip bounds
        the ring and its noise is added to the secure sum.
    settings : SecureAggregation, optional
        Clip (only without DP), precision and drop-out rate; default ``SecureAggregation()``.
    seed : int, default 0
        Seed of the masks and drop-outs (a stream per round).

    Raises
    ------
    ValueError
        Without exactly one clip bound (``settings.clip`` or DP's), with adaptive DP clipping
        (clients clip before masking, so the server never sees unclipped norms), with
        compression (masked vectors are uniform in the ring), or inside a DP stage (wrap the
        DP stage instead, so its noise goes on the secure sum).
    """

    prefix = "secagg"

    def __init__(self, strategy: Strategy, settings: SecureAggregation | None = None, *,
                 seed: int = 0) -> None:
        settings = SecureAggregation() if settings is None else settings
        if not isinstance(settings, SecureAggregation):
            raise InputTypeError(f"settings must be a SecureAggregation, got {type(settings).__name__}")
        self.settings = settings
        self.seed = check_int_range("seed", seed, 0)
        super().__init__(strategy)
        dp = self.find(DPAggregate)
        if (settings.clip is None) == (dp is None):
            raise InputValueError("secure aggregation needs one clip bound: SecureAggregation(clip=...) "
                             "without DP, or the DP clip")

    def check_compatible(self, other: Strategy, inside: bool) -> None:
        super().check_compatible(other, inside)
        if isinstance(other, Compress):
            raise InputValueError("secure aggregation cannot be combined with compression: masked "
                             "vectors are uniform in the ring")
        if isinstance(other, DPAggregate):
            if not inside:
                raise InputValueError("wrap the DPAggregate stage in SecureAggregate (not the other way "
                                 "round), so the DP noise is added to the secure sum")
            if other.dp.target_quantile is not None:
                raise InputValueError("adaptive clipping cannot be combined with secure aggregation "
                                 "here: clients clip before masking, so the server never sees "
                                 "unclipped norms")

    def setup(self) -> None:
        self._dp = self.find(DPAggregate)
        # refuse a ring that could overflow before round 1
        FixedPointRing.for_sum(self._num_clients, self.clip, self.settings.frac_bits)

    @property
    def clip(self) -> float:
        """The L2 bound clients clip to: DP's clip, or ``settings.clip``."""
        dp = self.find(DPAggregate)
        if dp is not None:
            return dp.clip
        assert self.settings.clip is not None  # __init__ refused a stack without a clip bound
        return self.settings.clip

    def client_hooks(self, server_round: int) -> tuple:
        return (ClipDelta(self.clip),)

    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        agg = super().begin_aggregate(server_round)
        if self._dp is None:
            agg.delta = ClippedMean(agg.size, self.clip, 0.0, make_rng(self.seed, server_round, DP_NOISE))
        if not isinstance(agg.delta, ClippedMean):
            raise RuntimeError(f"SecureAggregate needs a ClippedMean aggregate inside, found "
                               f"{type(agg.delta).__name__}")
        self._mean = agg.delta
        self._mean.sum_securely(self.settings, (self.seed, server_round, SECURE_AGG))
        agg.weighted = False
        self._side = SideBytes()
        agg.transforms.append(self._side)
        return agg

    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        super().commit(server_round, params, agg)
        gone = self._mean.rejected
        ring = FixedPointRing.for_sum(agg.count, self.clip, self.settings.frac_bits)
        survivors = agg.count - len(gone)
        self._metrics = {
            "rejected": [agg.client_ids[i] for i in gone],
            "bytes_up": self._side.nbytes
            + survivors * client_upload_nbytes(self._size, agg.count, ring)
            + len(gone) * client_upload_nbytes(self._size, agg.count, ring, survived=False),
        }
