"""Differential privacy, secure aggregation, compression, robust aggregation and FedNova on top
of any strategy, through the simulator's extension points only.

:class:`Extended` wraps a strategy (FedAvg, FedAdam, SCAFFOLD, …) and leaves its server update
untouched; what it adds runs at three places of a round:

- on the client, as :class:`~npgru.fed.client.ClientHook` objects after the strategy's own:
  attack hooks (simulated malicious clients), compression with error feedback (the residual is
  the client's persistent state ``"ef_memory"``), and clipping before secure aggregation;
- in the round's aggregate: FedNova's division of each delta by ``‖a_k‖₁`` (from the client's
  ``metrics["steps"]``), then one aggregator — a robust rule, the DP/secure clipped mean, or the
  strategy's own;
- at commit: FedNova's rescaling by ``τ_eff``, the strategy's server update, the RDP accountant
  and the adaptive clip.

Per-round figures (``epsilon``, ``dp_clip``, ``bytes_up``, ``rejected``) come from
:meth:`Extended.round_metrics`, which the simulation adds to each committed round's history record
(before the round's checkpoint, so a resumed history is complete). :func:`from_options` builds
everything from ``npgru federate``'s options.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..datasets.base import FederatedData
from .accountant import RDPAccountant
from .attacks import UpdateAttack, choose_attackers, flip_client_labels, parse_attack
from .client import ClientHook, FitRes, HookContext
from .compress import compress_with_feedback, make_compressor
from .fednova import local_norm
from .privacy import (
    AdaptiveClip,
    check_clip,
    check_noise_multiplier,
    clip_l2,
    gaussian_mechanism,
    update_noise_multiplier,
)
from .robust import check_tolerance, make_aggregator
from .sampling import clients_per_round_count, make_rng
from .secagg import FixedPointRing, client_upload_nbytes, secure_sum
from .strategies import FitConfig, RoundAggregate, Strategy

# random-stream purposes (sampling.py uses 0–3, attacks.py 4)
COMPRESSION, DP_NOISE, SECURE_AGG = 5, 6, 7

#: the client-state name of the error-feedback residual
MEMORY = "ef_memory"


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
        The δ at which ε is reported. Each round is accounted as a sampled Gaussian mechanism with
        rate ``q = (updates in the aggregate) / (all clients)`` — the Poisson-sampling analysis of
        McMahan et al. 2018 applied to the simulator's fixed-size sampling.
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
            raise ValueError(f"dp delta must lie in (0, 1), got {self.delta!r}")
        if self.target_quantile is not None:
            if self.noise_multiplier > 0 and self.count_stddev is None:
                raise ValueError("adaptive clipping with noise needs count_stddev (e.g. K/20 for K "
                                 "clients per round, Andrew et al. 2021)")
            AdaptiveClip(self.clip, self.target_quantile, self.clip_learning_rate, self.count_stddev or 0.0)

    def update_noise_multiplier(self) -> float:
        """The updates' noise multiplier: ``z``, less the clip estimate's share if adaptive."""
        if self.target_quantile is None or self.noise_multiplier == 0:
            return self.noise_multiplier
        return update_noise_multiplier(self.noise_multiplier, self.count_stddev)


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
        if not 0 <= self.dropout < 1:
            raise ValueError(f"secure aggregation dropout must lie in [0, 1), got {self.dropout!r}")


# -- client side ---------------------------------------------------------------------------------


class CompressDelta(ClientHook):
    """Replace the delta by what the server decodes from its compressed form.

    With ``error_feedback`` the client adds its residual from earlier rounds before compressing
    and keeps the new one as its state ``"ef_memory"`` (stored only if the round commits).
    """

    def __init__(self, spec: str, error_feedback: bool = True) -> None:
        self.spec = spec
        self.error_feedback = error_feedback

    def on_delta(self, delta: np.ndarray, ctx: HookContext) -> None:
        ins = ctx.ins
        rng = make_rng(ins.seed, ins.server_round, COMPRESSION, ins.client_id)
        memory = ins.state.get(MEMORY) if self.error_feedback else None
        message, residual = compress_with_feedback(delta, memory, make_compressor(self.spec), rng)
        if self.error_feedback:
            ctx.new_state[MEMORY] = residual
        delta[...] = message.decode()


class ClipDelta(ClientHook):
    """Clip the delta to L2 norm ``clip`` on the client (needed before secure aggregation)."""

    def __init__(self, clip: float) -> None:
        self.clip = clip

    def on_delta(self, delta: np.ndarray, ctx: HookContext) -> None:
        delta[...] = clip_l2(delta, self.clip)[0]


# -- server side ---------------------------------------------------------------------------------


class ClippedMean:
    """Unweighted mean of updates clipped to L2 norm ``clip``: DP-FedAvg's aggregate.

    The sum goes through simulated secure aggregation if ``secure`` is given (clients that drop
    after masking leave it), gets ``N(0, (zC)²)`` noise if ``noise_multiplier > 0``, and is divided
    by the number of updates in it. Keeps the unclipped norms for adaptive clipping.
    """

    def __init__(self, size: int, clip: float, noise_multiplier: float, rng: np.random.Generator,
                 secure: SecureAggregation | None = None, secure_seed: tuple = ()) -> None:
        self.size, self.clip, self.noise_multiplier = size, clip, noise_multiplier
        self.rng, self.secure, self.secure_seed = rng, secure, secure_seed
        self.norms: list[float] = []
        self.rejected: list[int] = []
        self._buffer: dict[int, np.ndarray] = {}
        self._sum = np.zeros(size)

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
        """``(Σ clip(Δ_k) + N(0, (zC)²)) / K`` over the updates that reached the sum."""
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
        return total / (self.count - len(self.rejected))


class ExtendedRound(RoundAggregate):
    """A round's aggregate that, for FedNova, normalises each delta by its client's ``‖a_k‖₁``.

    ``tau_eff`` is then ``Σ p_k ‖a_k‖₁`` (Wang et al. 2020, Eq. 8); 1 without FedNova.
    """

    def __init__(self, size: int, aggregator, weighted: bool, fednova_momentum: float | None) -> None:
        super().__init__(size, aggregator)
        self.weighted = weighted
        self.fednova_momentum = fednova_momentum
        self.side_bytes = 0
        self._tau_sum = self._weight_sum = 0.0

    def add(self, res: FitRes) -> None:
        # what is sent up besides the delta; client state (c_i, ef_memory) stays on the device
        self.side_bytes += sum(v.nbytes for v in res.extras.values())
        if self.fednova_momentum is not None:
            if "steps" not in res.metrics:
                raise ValueError("FedNova needs each client's local step count in metrics['steps']")
            norm = local_norm(int(res.metrics["steps"]), self.fednova_momentum)
            w = float(res.num_examples) if self.weighted else 1.0
            self._tau_sum += w * norm
            self._weight_sum += w
            res = dataclasses.replace(res, delta=res.delta / norm)
        super().add(res)

    @property
    def tau_eff(self) -> float:
        """FedNova's effective number of local steps (1 without FedNova)."""
        return self._tau_sum / self._weight_sum if self._weight_sum else 1.0


# -- the wrapper ---------------------------------------------------------------------------------


class Extended(Strategy):
    """A strategy with privacy, secure aggregation, compression, robustness and FedNova added.

    Parameters
    ----------
    strategy : Strategy
        The strategy whose server update is used (FedAvg, FedAdam, SCAFFOLD, …).
    dp : DifferentialPrivacy, optional
        Clip, noise and account (the mean becomes unweighted, as in DP-FedAvg).
    secure_agg : SecureAggregation, optional
        Sum the clipped updates through simulated secure aggregation (unweighted mean).
    compress : str, optional
        ``q8``, ``q4``, ``q2`` or ``topk:FRACTION`` for the uplink.
    error_feedback : bool, default True
        Keep each client's compression residual across rounds.
    aggregator : str, default "mean"
        ``mean`` (the strategy's own aggregator), ``median``, ``trimmed:FRACTION``, ``krum:F`` or
        ``normclip:C``.
    fednova : bool, default False
        Normalise by local steps (Wang et al. 2020).
    local_momentum : float, default 0
        The clients' SGD momentum, for FedNova's ``‖a_k‖₁``.
    client_hooks : tuple of ClientHook
        Further client hooks, e.g. an :class:`~npgru.fed.attacks.UpdateAttack`.
    seed : int, default 0
        Seed of the server's randomness (DP noise, secure aggregation), per round.

    Raises
    ------
    ValueError
        For combinations whose guarantees do not hold: DP or secure aggregation with a robust
        rule (one client's influence is no longer bounded by the clip / the server cannot see
        individual updates), secure aggregation with compression (masked vectors are uniform),
        DP with FedNova (``τ_eff`` depends on the clients' data sizes).
    """

    def __init__(self, strategy: Strategy, *, dp: DifferentialPrivacy | None = None,
                 secure_agg: SecureAggregation | None = None, compress: str | None = None,
                 error_feedback: bool = True, aggregator: str = "mean", fednova: bool = False,
                 local_momentum: float = 0.0, client_hooks: tuple = (), seed: int = 0) -> None:
        if compress is not None:
            make_compressor(compress)
        robust_factory = make_aggregator(aggregator)
        if (dp or secure_agg) and aggregator != "mean":
            raise ValueError(f"aggregator {aggregator!r} cannot be combined with DP or secure aggregation")
        if secure_agg and compress:
            raise ValueError("secure aggregation cannot be combined with compression: masked "
                             "vectors are uniform in the ring")
        if dp and fednova:
            raise ValueError("DP cannot be combined with FedNova: tau_eff depends on client data sizes")
        if secure_agg and dp and dp.target_quantile is not None:
            raise ValueError("adaptive clipping cannot be combined with secure aggregation here: "
                             "clients clip before masking, so the server never sees unclipped norms")
        if secure_agg and (secure_agg.clip is None) == (dp is None):
            raise ValueError("secure aggregation needs one clip bound: SecureAggregation(clip=...) "
                             "without DP, or the DP clip")
        if fednova:
            local_norm(1, local_momentum)
        self.strategy = strategy
        self.dp, self.secure_agg = dp, secure_agg
        self.compress, self.error_feedback = compress, error_feedback
        self.aggregator, self._robust_factory = aggregator, robust_factory
        self.fednova, self.local_momentum = fednova, local_momentum
        self.client_hooks = tuple(client_hooks)
        self.seed = seed

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @property
    def min_clients(self) -> int:
        """The fewest valid updates a round needs here (Krum: ``2f + 3``); pass it to the
        simulation's ``min_clients`` so a thin round fails cleanly instead of raising."""
        return self._robust_factory(1, True).min_clients if self.aggregator != "mean" else 1

    def initialize(self, params: np.ndarray, num_clients: int) -> None:
        self.strategy.initialize(params, num_clients)
        self._size, self._num_clients = int(params.size), int(num_clients)
        self._accountant = RDPAccountant() if self.dp else None
        dp = self.dp
        self._adaptive = None if dp is None or dp.target_quantile is None else AdaptiveClip(
            dp.clip, dp.target_quantile, dp.clip_learning_rate, dp.count_stddev or 0.0)
        if self.secure_agg is not None:  # refuse a ring that could overflow before round 1
            FixedPointRing.for_sum(self._num_clients, self._clip(), self.secure_agg.frac_bits)
        self._payload = None if self.compress is None else make_compressor(self.compress)(
            np.zeros(self._size), np.random.default_rng(0)).nbytes
        self._metrics: dict = {}

    def _clip(self) -> float:
        if self._adaptive is not None:
            return self._adaptive.clip
        return self.dp.clip if self.dp is not None else self.secure_agg.clip

    def configure_fit(self, server_round: int) -> FitConfig:
        config = self.strategy.configure_fit(server_round)
        hooks = list(config.hooks) + list(self.client_hooks)
        if self.compress is not None:
            hooks.append(CompressDelta(self.compress, self.error_feedback))
        if self.secure_agg is not None:
            hooks.append(ClipDelta(self._clip()))
        return FitConfig(hooks=tuple(hooks), arrays=config.arrays)

    def begin_aggregate(self, server_round: int) -> ExtendedRound:
        weighted = self.strategy.weighted
        if self.dp or self.secure_agg:
            z = self.dp.update_noise_multiplier() if self.dp else 0.0
            rng = make_rng(self.seed, server_round, DP_NOISE)
            aggregator = ClippedMean(self._size, self._clip(), z, rng, self.secure_agg,
                                     (self.seed, server_round, SECURE_AGG))
            weighted = False
        elif self.aggregator != "mean":
            aggregator = self._robust_factory(self._size, weighted)
        else:
            aggregator = self.strategy.aggregator(self._size, weighted)
        momentum = self.local_momentum if self.fednova else None
        return ExtendedRound(self._size, aggregator, weighted, momentum)

    def commit(self, server_round: int, params: np.ndarray, agg: ExtendedRound) -> None:
        delta = agg.delta.result() * agg.tau_eff
        params[...] = self.strategy.server_update(params.astype(np.float64), delta, agg)
        positions = getattr(agg.delta, "rejected", [])
        metrics: dict = {"rejected": [agg.client_ids[i] for i in positions]}
        if self._payload is not None:
            metrics["bytes_up"] = agg.side_bytes + agg.count * self._payload
        if self.secure_agg is not None:
            ring = FixedPointRing.for_sum(agg.count, self._clip(), self.secure_agg.frac_bits)
            survivors = agg.count - len(positions)
            metrics["bytes_up"] = (
                agg.side_bytes
                + survivors * client_upload_nbytes(self._size, agg.count, ring)
                + len(positions) * client_upload_nbytes(self._size, agg.count, ring, survived=False)
            )
        if self.dp is not None:
            metrics["dp_clip"] = self._clip()
            included = agg.count - len(positions)
            self._accountant.step(included / self._num_clients, self.dp.noise_multiplier)
            epsilon = self._accountant.epsilon(self.dp.delta)
            metrics["epsilon"] = epsilon if math.isfinite(epsilon) else None  # z = 0: no privacy
            if self._adaptive is not None:
                self._adaptive.update(agg.delta.norms, agg.delta.rng)
        self._metrics = metrics

    # -- history ---------------------------------------------------------------------------------
    def round_metrics(self) -> dict:
        """The last committed round's figures: ``epsilon``, ``dp_clip``, ``bytes_up``, ``rejected``."""
        return dict(self._metrics)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = self.strategy.state_dict()
        if self._accountant is not None:
            state["ext.rdp"] = self._accountant.rdp.copy()
            state["ext.dp_rounds"] = np.array([self._accountant.steps])
        if self._adaptive is not None:
            state["ext.clip"] = np.array([self._adaptive.clip])
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        own = {k: v for k, v in state.items() if k.startswith("ext.")}
        self.strategy.load_state_dict({k: v for k, v in state.items() if k not in own})
        if self._accountant is not None:
            self._accountant.rdp = np.array(own["ext.rdp"], dtype=np.float64)
            self._accountant.steps = int(own["ext.dp_rounds"][0])
        if self._adaptive is not None:
            self._adaptive.clip = float(own["ext.clip"][0])


def from_options(strategy: Strategy, data: FederatedData, clients_per_round: int | float, *,
                 dp_clip: float | None = None, dp_noise: float = 0.0, dp_delta: float = 1e-5,
                 secure_agg: bool = False, compress: str | None = None, aggregator: str = "mean",
                 attack: str | None = None, fednova: bool = False,
                 seed: int = 0) -> tuple[Strategy, FederatedData]:
    """The :class:`Extended` strategy (and data) that ``npgru federate``'s options describe.

    With no option set, ``strategy`` itself comes back unchanged.

    Parameters mirror the flags ``--dp-clip``, ``--dp-noise``, ``--dp-delta``, ``--secure-agg``,
    ``--compress``, ``--aggregator``, ``--attack`` and ``--fednova``. Attackers are a seeded
    fraction of all clients; ``labelflip`` flips their training labels in the returned data, the
    other attacks become client hooks. A robust aggregator facing more attackers per round (in
    expectation) than it tolerates is refused.

    Raises
    ------
    ValueError
        On any bad value or combination, with a message naming it.
    """
    if dp_clip is None and dp_noise:
        raise ValueError("--dp-noise needs --dp-clip (the L2 bound that sets the noise scale)")
    if secure_agg and dp_clip is None:
        raise ValueError("--secure-agg needs --dp-clip: clients clip to it so their updates fit the ring")
    dp = None if dp_clip is None else DifferentialPrivacy(dp_clip, dp_noise, dp_delta)
    hooks: tuple = ()
    if attack is not None:
        kind, param, fraction = parse_attack(attack)
        attackers = choose_attackers([c.client_id for c in data.clients], fraction, seed)
        if kind == "labelflip":
            num_classes = data.meta.get("num_classes") or len(data.meta.get("vocab", ()))
            if data.task == "regression" or num_classes < 2:
                raise ValueError("labelflip needs a classification or next-token task")
            data = dataclasses.replace(
                data, clients=flip_client_labels(data.clients, attackers, num_classes))
        else:
            hooks = (UpdateAttack(attackers, kind, param),)
        if aggregator != "mean":
            per_round = clients_per_round_count(clients_per_round, len(data.clients))
            robust = make_aggregator(aggregator)(1, True)
            check_tolerance(robust, per_round, round(fraction * per_round))
    if dp is None and not (secure_agg or compress or hooks or fednova) and aggregator == "mean":
        return strategy, data  # nothing to add: the plain strategy
    extended = Extended(strategy, dp=dp, secure_agg=SecureAggregation() if secure_agg else None,
                        compress=compress, aggregator=aggregator, fednova=fednova,
                        client_hooks=hooks, seed=seed)
    return extended, data
