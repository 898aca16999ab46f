"""The base of every defence stage: a strategy wrapped around an inner strategy.

As with Flower's DP and robustness wrappers, each defence is its own strategy around another
(``DPAggregate(FedAdam(), dp)``): it adds its client hooks after the inner strategy's, may
change the round's aggregate before any update arrives (a transform, another aggregator), and
commits by handing off to the inner strategy's :meth:`~npgru.fed.Strategy.commit` — the server
update is always the inner strategy's. It owns its state (saved under its own prefix), its
per-round figures, its ``min_clients`` and its part of :meth:`describe`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import numpy as np

from ..._checks import InputTypeError, InputValueError
from ..strategies import FitConfig, RoundAggregate, Strategy

S = TypeVar("S", bound=Strategy)


class Stage(Strategy):
    """A strategy that wraps ``strategy`` and adds one concern to it.

    Subclasses override what they need of: :meth:`check_compatible` (refuse a combination whose
    guarantees do not hold), :meth:`setup` (per-run state), :meth:`client_hooks`,
    :meth:`begin_aggregate` / :meth:`commit` (calling ``super()``), ``own_min_clients``,
    :meth:`own_state` / :meth:`load_own_state`, and set ``self._metrics`` in :meth:`commit`.

    Parameters
    ----------
    strategy : Strategy
        The inner strategy (a plain one, or another stage).

    Raises
    ------
    TypeError
        If ``strategy`` is not a :class:`~npgru.fed.Strategy`.
    ValueError
        If this stage cannot be combined with one already in ``strategy``.
    """

    #: the prefix of this stage's keys in the strategy state (and in checkpoints)
    prefix: str = ""

    def __init__(self, strategy: Strategy) -> None:
        if not isinstance(strategy, Strategy):
            raise InputTypeError(f"strategy must be a Strategy, got {type(strategy).__name__}")
        self.strategy = strategy
        for layer in strategy.layers():
            self.check_compatible(layer, inside=True)
            if isinstance(layer, Stage):
                layer.check_compatible(self, inside=False)
        self._metrics: dict = {}

    def check_compatible(self, other: Strategy, inside: bool) -> None:
        """Raise ``ValueError`` if this stage must not be combined with ``other``.

        ``inside`` says whether ``other`` is wrapped by this stage (else it wraps this one). By
        default a stage refuses a second stage of its own kind.
        """
        if type(other) is type(self):
            raise InputValueError(f"{type(self).__name__} is applied twice")

    # -- composition ----------------------------------------------------------------------
    def layers(self) -> Iterator[Strategy]:
        yield self
        yield from self.strategy.layers()

    def find(self, cls: type[S]) -> S | None:
        """The first strategy of type ``cls`` inside this stage, or None."""
        return next((s for s in self.strategy.layers() if isinstance(s, cls)), None)

    @property
    def own_min_clients(self) -> int:
        """The fewest valid updates this stage itself needs."""
        return 1

    @property
    def min_clients(self) -> int:
        return max(self.strategy.min_clients, self.own_min_clients)

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "strategy"}

    def describe(self) -> dict:
        return {**super().describe(), "strategy": self.strategy.describe()}

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({self.strategy!r}{args})"

    # -- the round ------------------------------------------------------------------------
    def initialize(self, params: np.ndarray, num_clients: int) -> None:
        self.strategy.initialize(params, num_clients)
        self._size, self._num_clients = int(params.size), int(num_clients)
        self._metrics = {}
        self.setup()

    def client_update(self, update):
        return self.strategy.client_update(update)

    def upload_nbytes(self, res) -> int:
        return self.strategy.upload_nbytes(res)

    def set_sampling(self, plan) -> None:
        self.strategy.set_sampling(plan)
        self._sampling = plan

    def setup(self) -> None:
        """Reset this stage's own state (after the inner strategy's ``initialize``)."""

    def client_hooks(self, server_round: int) -> tuple:
        """Client hooks this stage adds after the inner strategy's."""
        return ()

    def configure_fit(self, server_round: int) -> FitConfig:
        config = self.strategy.configure_fit(server_round)
        return FitConfig(hooks=tuple(config.hooks) + tuple(self.client_hooks(server_round)),
                         arrays=config.arrays)

    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        return self.strategy.begin_aggregate(server_round)

    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        self.strategy.commit(server_round, params, agg)

    def round_metrics(self) -> dict:
        return {**self.strategy.round_metrics(), **self._metrics}

    # -- state ----------------------------------------------------------------------------
    def own_state(self) -> dict[str, np.ndarray]:
        """This stage's state arrays (keys without the prefix)."""
        return {}

    def load_own_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`own_state`'s arrays."""

    def state_dict(self) -> dict[str, np.ndarray]:
        state = self.strategy.state_dict()
        state.update({f"{self.prefix}.{k}": v for k, v in self.own_state().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        mine = f"{self.prefix}."
        own = {k[len(mine):]: v for k, v in state.items() if k.startswith(mine)}
        expected = set(self.own_state())
        if set(own) != expected:
            raise InputValueError(f"{type(self).__name__} state needs {sorted(expected)}, got {sorted(own)}")
        self.strategy.load_state_dict({k: v for k, v in state.items() if not k.startswith(mine)})
        if own:
            self.load_own_state(own)


class SideBytes:
    """A round-aggregate transform that counts what clients send up besides the delta.

    Extras such as SCAFFOLD's Δc_i travel with the update; client state (c_i, ef_memory) stays
    on the device and is not counted.
    """

    def __init__(self) -> None:
        self.nbytes = 0

    def __call__(self, res):
        self.nbytes += sum(v.nbytes for v in res.extras.values())
        return res
