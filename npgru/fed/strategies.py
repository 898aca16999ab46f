"""Strategies: how a round is configured and how its updates become the next global model.

As in Flower, a strategy only answers two questions — what do clients get this round
(:meth:`Strategy.configure_fit`) and how do their results change the global model
(:meth:`Strategy.begin_aggregate` and :meth:`Strategy.commit`) — and the round loop knows
nothing of any one strategy. Aggregation is split in two so that a round can be abandoned: the
loop streams valid updates into a :class:`RoundAggregate`, and only if enough arrived does it
call :meth:`Strategy.commit`, the one place where the global parameters and the strategy's
state change. A failed round therefore leaves both untouched.

Server optimizers follow Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2:
the server treats the averaged delta Δ_t as a negative pseudo-gradient,

    m_t = β₁ m_{t−1} + (1 − β₁) Δ_t
    v_t = v_{t−1} + Δ_t²                                   (FedAdagrad)
    v_t = v_{t−1} − (1 − β₂) Δ_t² sign(v_{t−1} − Δ_t²)      (FedYogi)
    v_t = β₂ v_{t−1} + (1 − β₂) Δ_t²                       (FedAdam)
    x_{t+1} = x_t + η m_t / (√v_t + τ)

with m_{−1} = 0, v_{−1} = τ² and no bias correction, as in the paper. Server state is float64.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .._checks import InputTypeError, check_int_range, check_real_range
from .._registry import Registry
from .aggregate import WeightedMean
from .client import ClientHook, FitRes, HookContext
from .identity import describe
from .sampling import SamplingPlan


@dataclass(frozen=True)
class FitConfig:
    """A strategy's instructions for every client of a round.

    Attributes
    ----------
    hooks : tuple of ClientHook
        Client-side hooks, applied in order during local training.
    arrays : dict of str to ndarray
        Arrays broadcast to every client (counted in the bytes sent down).
    """

    hooks: tuple = ()
    arrays: dict = field(default_factory=dict)


class RoundAggregate:
    """The running aggregate of one round's valid updates.

    ``delta`` aggregates the deltas with the strategy's aggregator; every extra vector a client
    returns (e.g. SCAFFOLD's Δc_i) is averaged unweighted under its own name. Stages wrapped
    around a strategy may, before the first :meth:`add`, replace ``delta`` (a robust or private
    aggregator), clear ``weighted`` and append ``transforms``: functions ``FitRes -> FitRes``
    applied, in order, to every result before it is aggregated (e.g. FedNova's normalisation).
    """

    def __init__(self, size: int, delta_aggregator, weighted: bool = True):
        self.size = size
        self.delta = delta_aggregator
        self.weighted = weighted
        self.transforms: list[Callable[[FitRes], FitRes]] = []
        self.extras: dict[str, WeightedMean] = {}
        self.client_ids: list[str] = []

    @property
    def count(self) -> int:
        """Number of updates added."""
        return self.delta.count

    def add(self, res: FitRes) -> None:
        """Add one validated client result."""
        for transform in self.transforms:
            res = transform(res)
        self.delta.add(res.delta, res.num_examples)
        for name, vector in res.extras.items():
            self.extras.setdefault(name, WeightedMean(self.size, weighted=False)).add(vector)
        self.client_ids.append(res.client_id)


class Strategy(abc.ABC):
    """What every strategy answers; the round loop knows nothing else of it.

    A round calls :meth:`configure_fit`, streams the valid results into the
    :meth:`begin_aggregate` object, then — only if at least ``max(min_clients,
    strategy.min_clients)`` arrived — :meth:`commit`, and records :meth:`round_metrics`.
    :meth:`describe` is the strategy's identity in checkpoints: two strategies that can give
    different results describe themselves differently.
    """

    @property
    def min_clients(self) -> int:
        """The fewest valid updates a round needs for this strategy's aggregate to be defined."""
        return 1

    @abc.abstractmethod
    def initialize(self, params: np.ndarray, num_clients: int) -> None:
        """Reset the server state for a model of ``params.size`` parameters and its clients."""

    @abc.abstractmethod
    def configure_fit(self, server_round: int) -> FitConfig:
        """Instructions for every client of ``server_round``."""

    @abc.abstractmethod
    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        """An empty aggregate for ``server_round``'s updates."""

    @abc.abstractmethod
    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        """Apply the round's aggregate to ``params`` in place (and update the server state)."""

    def round_metrics(self) -> dict:
        """Figures of the round just committed for its history record (e.g. privacy spent)."""
        return {}

    def client_update(self, update: Callable) -> Callable:
        """The local update clients run under this strategy: ``update``, or a wrapper of it
        (Ditto's clients also train a personal model)."""
        return update

    def upload_nbytes(self, res: FitRes) -> int:
        """Bytes ``res`` takes on its way to the server (what the simulated clock times).

        The delta and the extras; client state stays on the device. A stage that changes the
        payload (compression) says so.
        """
        delta = 0 if res.delta is None else res.delta.nbytes
        return int(delta + sum(v.nbytes for v in res.extras.values()))

    def set_sampling(self, plan: SamplingPlan) -> None:
        """Learn how the run samples its clients (the simulation calls it after initialize).

        Only a strategy whose figures depend on it uses it (the DP accountant).
        """
        self._sampling = plan

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the server-state arrays (for checkpoints)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the server state saved by :meth:`state_dict` (``ValueError`` on a mismatch)."""

    def get_params(self) -> dict:
        """The constructor settings."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def describe(self) -> dict:
        """The strategy's name and settings as plain JSON values (its checkpoint identity)."""
        return {"name": type(self).__name__,
                **{k: describe(v) for k, v in self.get_params().items()}}

    def layers(self) -> Iterator[Strategy]:
        """This strategy and, for a stage, every strategy it wraps (outermost first)."""
        yield self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={describe(v)!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class FedAvg(Strategy):
    """Federated averaging (McMahan et al. 2017): θ ← θ + η_s Σ w_k Δ_k.

    The base of the server optimizers below (FedAvgM, FedAdam, …), FedProx and SCAFFOLD.

    Parameters
    ----------
    server_lr : float, default 1.0
        Server learning rate η_s.
    weighted : bool, default True
        Weight client deltas by their example counts n_k / Σ n (McMahan et al. 2017); when
        False every client counts 1/K.
    aggregator : callable, default WeightedMean
        ``aggregator(size, weighted)`` returns the object that combines deltas (anything with
        ``add(vector, weight)``, ``count`` and ``result()``), so robust aggregators plug in here.
    """

    # Names of the float64 server-state vectors a subclass keeps (allocated by initialize).
    state_names: tuple[str, ...] = ()

    def __init__(self, *, server_lr: float = 1.0, weighted: bool = True,
                 aggregator: Callable = WeightedMean):
        self.server_lr = server_lr
        self.weighted = weighted
        self.aggregator = aggregator

    @property
    def min_clients(self) -> int:
        """What the aggregator needs (Krum: ``2f + 3``), else 1."""
        return getattr(self.aggregator(1, self.weighted), "min_clients", 1)

    # -- lifecycle ------------------------------------------------------------------------
    def initialize(self, params: np.ndarray, num_clients: int) -> None:
        """Reset the server state for a model of ``params.size`` parameters."""
        self._check_params()
        self._size = int(params.size)
        self._num_clients = int(num_clients)
        self._state = {name: self._initial_state(name) for name in self.state_names}

    def _check_params(self) -> None:
        """Refuse settings of the wrong type or outside their ranges (called by initialize)."""
        check_real_range("server_lr", self.server_lr, 0, include_low=False)
        if not isinstance(self.weighted, bool):
            raise InputTypeError(f"weighted must be a bool, got {type(self.weighted).__name__}")
        if not callable(self.aggregator):
            raise InputTypeError(f"aggregator must be a factory f(size, weighted), got "
                                 f"{type(self.aggregator).__name__}")

    def _initial_state(self, name: str) -> np.ndarray:
        return np.zeros(self._size, dtype=np.float64)

    def configure_fit(self, server_round: int) -> FitConfig:
        """Instructions for every client of ``server_round``."""
        return FitConfig()

    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        """An empty aggregate for ``server_round``'s updates."""
        return RoundAggregate(self._size, self.aggregator(self._size, self.weighted), self.weighted)

    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        """Apply the round's aggregate to ``params`` in place (and update the server state)."""
        x = params.astype(np.float64)
        params[...] = self.server_update(x, agg.delta.result(), agg)

    def server_update(self, x: np.ndarray, delta: np.ndarray, agg: RoundAggregate) -> np.ndarray:
        """The new global parameters (float64) from the old ones and the mean delta."""
        return x + self.server_lr * delta

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the server-state vectors (for checkpoints)."""
        return {name: v.copy() for name, v in self._state.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the server state saved by :meth:`state_dict`.

        Raises
        ------
        ValueError
            If names or shapes differ from this strategy's.
        """
        if set(state) != set(self.state_names):
            raise ValueError(
                f"{type(self).__name__} state needs {sorted(self.state_names)}, got {sorted(state)}"
            )
        for name, v in state.items():
            if v.shape != (self._size,):
                raise ValueError(f"state {name!r} has shape {v.shape}, expected ({self._size},)")
            self._state[name] = np.array(v, dtype=np.float64)


def _check_unit(name: str, value: float) -> None:
    check_real_range(name, value, 0, 1, include_high=False)


class FedAvgM(FedAvg):
    """FedAvg with server momentum (Hsu et al. 2019): v ← β v + Δ, θ ← θ + η_s v.

    Parameters
    ----------
    momentum : float, default 0.9
        β.
    server_lr, weighted, aggregator
        As :class:`FedAvg`.
    """

    state_names = ("momentum",)

    def __init__(self, *, momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum

    def _check_params(self):
        super()._check_params()
        _check_unit("momentum", self.momentum)

    def server_update(self, x, delta, agg):
        v = self._state["momentum"]
        v *= self.momentum
        v += delta
        return x + self.server_lr * v


class _FedOpt(FedAvg):
    """Reddi et al. 2021's adaptive server optimizers; subclasses give the v_t rule."""

    state_names = ("m", "v")

    def __init__(self, *, server_lr: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3, **kwargs):
        super().__init__(server_lr=server_lr, **kwargs)
        self.beta1, self.beta2, self.tau = beta1, beta2, tau

    def _check_params(self):
        super()._check_params()
        _check_unit("beta1", self.beta1)
        _check_unit("beta2", self.beta2)
        check_real_range("tau", self.tau, 0, include_low=False)

    def _initial_state(self, name):
        # v_{-1} = τ² (the paper's "v_{-1} ≥ τ²"); m_{-1} = 0.
        return np.full(self._size, self.tau**2 if name == "v" else 0.0)

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        raise NotImplementedError

    def server_update(self, x, delta, agg):
        m, v = self._state["m"], self._state["v"]
        m *= self.beta1
        m += (1 - self.beta1) * delta
        self._second_moment(v, delta * delta)
        return x + self.server_lr * m / (np.sqrt(v) + self.tau)


class FedAdagrad(_FedOpt):
    """FedAdagrad (Reddi et al. 2021): v ← v + Δ². Parameters as :class:`FedAdam`."""

    def _second_moment(self, v, d2):
        v += d2


class FedYogi(_FedOpt):
    """FedYogi (Reddi et al. 2021): v ← v − (1 − β₂) Δ² sign(v − Δ²). Parameters as FedAdam."""

    def _second_moment(self, v, d2):
        v -= (1 - self.beta2) * d2 * np.sign(v - d2)


class FedAdam(_FedOpt):
    """FedAdam (Reddi et al. 2021): v ← β₂ v + (1 − β₂) Δ².

    Parameters
    ----------
    server_lr : float, default 1e-2
        η.
    beta1, beta2 : float, default 0.9, 0.99
        Moment decay rates.
    tau : float, default 1e-3
        Adaptivity τ (also sets v_{−1} = τ²).
    weighted, aggregator
        As :class:`FedAvg`.
    """

    def _second_moment(self, v, d2):
        v *= self.beta2
        v += (1 - self.beta2) * d2


class ProximalTerm(ClientHook):
    """FedProx's client term μ/2 ‖θ − θ_global‖², whose gradient μ(θ − θ_global) is added."""

    def __init__(self, mu: float):
        self.mu = mu

    def on_grad(self, grads, params, ctx: HookContext):
        grads += self.mu * (params - ctx.global_params)


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg whose clients minimise f_k(θ) + μ/2 ‖θ − θ_global‖².

    Parameters
    ----------
    mu : float, default 0.01
        Proximal coefficient μ ≥ 0 (μ = 0 is FedAvg).
    server_lr, weighted, aggregator
        As :class:`FedAvg`.
    """

    def __init__(self, *, mu: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.mu = mu

    def _check_params(self):
        super()._check_params()
        check_real_range("mu", self.mu, 0)

    def configure_fit(self, server_round):
        return FitConfig(hooks=(ProximalTerm(self.mu),))


class ScaffoldCorrection(ClientHook):
    """SCAFFOLD's client side (Karimireddy et al. 2020, Algorithm 1, option II).

    Each local gradient gets c − c_i added; after K local steps of size η_l,
    c_i⁺ = c_i − c + (θ − θ_k)/(K η_l) becomes the client's new state and Δc_i = c_i⁺ − c_i is
    sent up. Option II assumes plain SGD locally.
    """

    def begin(self, ctx):
        c = ctx.ins.arrays["c"]
        c_i = ctx.ins.state.get("c_i", np.zeros_like(c))
        ctx.scratch["c_i"] = c_i
        ctx.scratch["correction"] = (c - c_i).astype(ctx.global_params.dtype)

    def on_grad(self, grads, params, ctx):
        grads += ctx.scratch["correction"]

    def on_delta(self, delta, ctx):
        c, c_i = ctx.ins.arrays["c"], ctx.scratch["c_i"]
        c_i_new = c_i - c - delta / (ctx.steps * ctx.lr)
        ctx.new_state["c_i"] = c_i_new
        ctx.extras["delta_c"] = c_i_new - c_i


class Scaffold(FedAvg):
    """SCAFFOLD (Karimireddy et al. 2020): control variates correct client drift.

    The server keeps c; each client keeps c_i across rounds (stored by the simulation, saved
    in checkpoints, updated only when a round commits). After a round over the set S of N
    clients: θ ← θ + η_s Δ and c ← c + (|S|/N) mean(Δc_i).

    Parameters
    ----------
    server_lr, weighted, aggregator
        As :class:`FedAvg` (the paper's Δ is unweighted: pass ``weighted=False``).
    """

    state_names = ("c",)

    def configure_fit(self, server_round):
        return FitConfig(hooks=(ScaffoldCorrection(),), arrays={"c": self._state["c"]})

    def server_update(self, x, delta, agg):
        if "delta_c" in agg.extras:
            self._state["c"] += (agg.count / self._num_clients) * agg.extras["delta_c"].result()
        return x + self.server_lr * delta


class Ditto(FedAvg):
    """Ditto (Li, Hu, Beirami and Smith 2021): FedAvg plus a personal model on every client.

    The global model is trained and aggregated exactly as FedAvg; each sampled client also
    trains its personal model ``v_k`` on ``F_k(v) + λ/2 ‖v − w‖²`` (see
    :class:`~npgru.fed.personalize.DittoUpdate`), kept in its state. The simulation's
    personalised figures (``personalized_*``) evaluate ``v_k`` (fine-tuned further if
    ``personalize_epochs`` is set).

    Parameters
    ----------
    lam : float, default 0.1
        λ ≥ 0; λ = 0 trains purely local personal models, large λ keeps them near the global.
    personal_epochs : int, default 1
        Local epochs of personal training per round.
    server_lr, weighted, aggregator
        As :class:`FedAvg`.
    """

    def __init__(self, *, lam: float = 0.1, personal_epochs: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.lam = lam
        self.personal_epochs = personal_epochs

    def _check_params(self):
        super()._check_params()
        check_real_range("lam", self.lam, 0)
        check_int_range("personal_epochs", self.personal_epochs, 1)

    def client_update(self, update: Callable) -> Callable:
        from .personalize import DittoUpdate

        return DittoUpdate(float(self.lam), int(self.personal_epochs), update)


#: ``npgru federate --strategy`` names (and any other builder's): name → strategy class.
STRATEGIES: Registry = Registry("strategy")
STRATEGIES.register("fedavg", FedAvg)
STRATEGIES.register("fedavgm", FedAvgM)
STRATEGIES.register("fedadam", FedAdam)
STRATEGIES.register("fedyogi", FedYogi)
STRATEGIES.register("fedadagrad", FedAdagrad)
STRATEGIES.register("fedprox", FedProx)
STRATEGIES.register("scaffold", Scaffold)
STRATEGIES.register("ditto", Ditto)
