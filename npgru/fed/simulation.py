"""The round loop: sample → broadcast → local fit → delta → aggregate, round after round.

The loop knows no strategy and no executor by name: it asks the strategy for the round's
instructions, hands them to the executor, streams the results — in sampling order — through
validation into the strategy's aggregate, and commits only if at least ``min_clients`` valid
updates arrived. Everything random derives from (seed, round, client), so the result does not
depend on the executor, and a run resumed from a checkpoint equals an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from .._atomic import remove_stale_temp_files, write_atomic
from .._checks import (
    InputTypeError,
    InputValueError,
    check_choice,
    check_int_range,
    check_positive_float,
    check_real_range,
)
from ..datasets.base import ClientData, FederatedData
from .async_ import FedBuff
from .checkpoint import check_restorable, load_checkpoint, save_checkpoint
from .client import FitIns, LocalTraining, UnusableResult, check_result, local_update
from .clock import build_clock, first_finishers
from .devices import POPULATIONS, device_table
from .executors import Executor, clone_model, make_executor, single_blas_thread
from .identity import array_digest, data_fingerprint, describe, differences
from .personalize import SharedLayersUpdate, local_mask, personalized_evaluation
from .sampling import SAMPLINGS, SYSTEM, SamplingPlan, clients_per_round_count, make_rng, sample_clients
from .stages.privacy import DPAggregate
from .strategies import FedAvg, Strategy

CHECKPOINT_NAME = "checkpoint.npz"

#: Simulation's keywords of one release ago → the LocalTraining field each now sets.
LEGACY_TRAINING = {"local_epochs": "epochs", "local_steps": "steps", "batch_size": "batch_size",
                   "optimizer": "optimizer", "lr": "lr", "optimizer_kwargs": "optimizer_kwargs",
                   "clip_norm": "clip_norm", "time_budget": "time_budget"}


class History:
    """Per-round records of a simulation, each a JSON-serialisable dict.

    Every record has ``round``, ``status`` (``"ok"`` or ``"failed"``, then ``failure`` says
    why), ``sampled``, ``ok``, ``dropped`` (client id → reason), ``partial`` (straggler id →
    fraction of its work kept), ``num_sampled``, ``num_ok``, ``train_loss``, ``bytes_up``,
    ``bytes_down`` (as transferred here: float64 deltas, the model's dtype down),
    ``wall_time`` (seconds of the round's training and aggregation) and ``sim_time``
    (simulated seconds since the start of the run at the end of the round, see
    ``device_profile``); rounds that evaluate add
    ``test_loss`` (and ``test_accuracy``), the federated ``fed_*`` metrics (see
    :func:`federated_summary`) and ``eval_s`` (seconds the evaluation took).
    """

    def __init__(self, records: Sequence[dict] = ()):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]

    def series(self, key: str) -> list:
        """``key``'s value in every round (``None`` where a round lacks it)."""
        return [r.get(key) for r in self.records]

    def to_json(self, path: str | None = None) -> str:
        """The records as JSON text, also written to ``path`` (atomically) if given."""
        text = json.dumps(self.records, indent=1)
        if path is not None:
            write_atomic(path, lambda f: f.write(text.encode()))
        return text

    @classmethod
    def from_json(cls, text: str) -> History:
        """Rebuild a history from :meth:`to_json`'s text."""
        return cls(json.loads(text))


def _short(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _json_number(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class Simulation:
    """A seeded federated-learning simulation (scikit-learn style: the constructor only stores).

    Parameters
    ----------
    model : Module
        The initial global model; it is copied, never modified. It needs ``config()``,
        ``loss_and_grad(X, y, lengths)`` and ``evaluate(X, y, lengths)``.
    data : FederatedData or sequence of ClientData
        The clients (ids must be unique).
    strategy : Strategy, optional
        Default :class:`~npgru.fed.FedAvg`; a plain strategy or a stack of stages. Its server
        state is reset by :meth:`run`.
    training : LocalTraining, optional
        How clients train locally (optimizer, lr, batch size, epochs or steps, clip, time
        budget); default ``LocalTraining()``. The keywords ``local_epochs``, ``local_steps``,
        ``batch_size``, ``optimizer``, ``lr``, ``optimizer_kwargs``, ``clip_norm`` and
        ``time_budget`` still set its fields, with a ``DeprecationWarning``, for one release.
    rounds : int, default 10
        Total number of rounds (a resumed run continues up to it).
    clients_per_round : int or float, default 10
        A count, or a fraction in (0, 1] of all clients (with Poisson sampling: the expected
        number, ``q = count / number of clients``).
    sampling : {"fixed", "poisson"}, default "fixed"
        ``"fixed"``: exactly ``clients_per_round`` distinct clients a round; ``"poisson"``:
        each client joins independently with probability ``q``, so a round's size varies (it
        may fail for want of ``min_clients``). Either is seeded from (seed, round), and a DP
        stage accounts each with its own analysis (see :class:`~npgru.fed.DPAggregate`).
    min_clients : int, default 1
        Valid updates a round needs to commit; with fewer, the model stays as it was and the
        round is recorded as failed. The strategy's own ``min_clients`` (Krum's ``2f + 3``)
        applies too: a round needs the larger of the two.
    dropout : float, default 0
        Probability that a sampled client drops out before training.
    stragglers : float, default 0
        Probability that a sampled client is a straggler that gets only a uniform random
        fraction of its work done by the round's deadline.
    straggler_policy : {"drop", "partial"}, default "drop"
        Drop stragglers (FedAvg), or keep their partial work (FedProx's systems heterogeneity);
        this applies to clients that miss the ``deadline`` too.
    device_profile : {"uniform", "mobile"} or mapping, default "uniform"
        Every client's device (compute speed, bandwidths, latency, daily online window): a
        population of :mod:`npgru.fed.devices` drawn from (seed, client id), or a mapping of
        client id to :class:`~npgru.fed.devices.DeviceProfile`. It drives the simulated clock:
        a round lasts as long as its slowest counted client (download + local training +
        upload of its actual, possibly compressed, bytes), recorded as ``sim_time``. A client
        going offline before it finishes is dropped. With ``sampling="fixed"`` and no DP
        stage a round samples among the clients online at its start (those that have checked
        in, as in Bonawitz et al. 2019); if none is, the clock first waits for the first to come
        online. With Poisson sampling or a DP stage it samples the whole population and drops
        the offline clients: the accountant's amplification by sampling assumes every client
        is drawn at rate ``q = clients_per_round / number of clients``, which sampling among
        fewer online clients would exceed.
    deadline : float, optional
        Simulated seconds a round allows: clients not done by then are dropped (or, with
        ``straggler_policy="partial"``, do the share of their work that fits, their upload
        budgeted at the uncompressed delta's size). ``None``: no deadline.
    over_select : float, default 1
        Sample ``ceil(over_select × clients_per_round)`` clients and count only the first
        ``clients_per_round`` to finish (Bonawitz et al. 2019); fixed-size sampling only.
    async_buffer : int, optional
        FedBuff (Nguyen et al. 2022, :mod:`npgru.fed.async_`): no rounds; clients train
        concurrently on the simulated clock and the server applies an update every
        ``async_buffer`` arrivals, each weighted by ``1/√(1 + staleness)``. A "round" is then
        one applied update; its record adds ``staleness`` (``mean``, ``max``). Not with a
        ``deadline``, over-selection, Poisson sampling or DP.
    max_concurrency : int, optional
        Clients training at once under ``async_buffer`` (default: the clients per round).
    executor : {"serial", "process"} or Executor, default "serial"
        Where local updates run; results are bit-identical across executors.
    workers : int, optional
        Processes for ``executor="process"`` (default: CPU count).
    local_update : callable, optional
        ``f(model, data, ins, training) -> FitRes``; default
        :func:`~npgru.fed.client.local_update`.
    eval_every : int, default 1
        Evaluate every this many rounds (and after the last); 0 turns evaluation off.
    federated_eval : bool, default True
        Also evaluate on every client's test split (per-client, weighted mean, worst decile).
    personalize_epochs : int, default 0
        At every evaluation, each client with a test split also fine-tunes the global model
        for this many local epochs and evaluates it on its own test split: the records get
        ``personalized_<metric>`` (weighted mean), ``personalized_<metric>_worst10`` and
        ``personalized_clients``, beside the global model's ``fed_*`` figures.
    shared_layers : sequence of str, optional
        FedPer-style partial sharing: only the parameters under these name prefixes (e.g.
        ``("embed", "gru")``) are averaged; the rest (the head) stays on each client, in its
        state. The personalised figures are then computed with each client's own head (and
        also without fine-tuning).
    test_data : tuple, optional
        ``(X, y)`` or ``(X, y, lengths)`` for centralized evaluation; default: the clients'
        pooled test splits.
    checkpoint_dir : str, optional
        Where to keep ``checkpoint.npz``; ``None`` writes no checkpoints.
    checkpoint_every : int, default 1
        Checkpoint every this many rounds (and after the last).
    seed : int, default 0
        The seed of every random choice: sampling, drop-outs, stragglers, local shuffling.
    options : mapping, optional
        How the model and data were made beyond what the simulation sees (e.g. the command
        line's dataset options), as plain values: saved with checkpoints and compared on
        resume, so a refused resume names the option that differs.

    Attributes
    ----------
    model_ : Module
        The global model after :meth:`run`.
    strategy_ : Strategy
        The strategy that ran (``strategy``, or the default FedAvg), holding its server state.
    history_ : History
        The per-round records.
    client_states_ : dict
        Each client's persistent state (SCAFFOLD's ``c_i``).

    Examples
    --------
    >>> sim = Simulation(model, data, FedAdam(), rounds=20, clients_per_round=0.1,
    ...                  training=LocalTraining(lr=0.1, batch_size=16))
    >>> history = sim.run()
    >>> history[-1]["test_loss"]
    """

    def __init__(self, model, data, strategy: Strategy | None = None, *,
                 training: LocalTraining | None = None, rounds: int = 10,
                 clients_per_round: int | float = 10, sampling: str = "fixed",
                 min_clients: int = 1,
                 dropout: float = 0.0, stragglers: float = 0.0, straggler_policy: str = "drop",
                 device_profile: str | Mapping = "uniform", deadline: float | None = None,
                 over_select: float = 1.0, async_buffer: int | None = None,
                 max_concurrency: int | None = None,
                 executor: str | Executor = "serial", workers: int | None = None,
                 local_update: Callable | None = None, eval_every: int = 1,
                 federated_eval: bool = True, personalize_epochs: int = 0,
                 shared_layers: Sequence[str] | None = None, test_data: tuple | None = None,
                 checkpoint_dir: str | None = None, checkpoint_every: int = 1, seed: int = 0,
                 options: Mapping | None = None, **legacy):
        unknown = sorted(set(legacy) - set(LEGACY_TRAINING))
        if unknown:
            raise TypeError(f"Simulation() got an unexpected keyword argument {unknown[0]!r}")
        # the name of each training setting in error messages: as the caller passed it
        self._training_names = {field: f"training.{field}" for field in LEGACY_TRAINING.values()}
        if legacy:
            if training is not None:
                raise InputTypeError(f"pass either training= or the deprecated {sorted(legacy)}, "
                                     "not both")
            warnings.warn(f"Simulation({', '.join(f'{k}=' for k in legacy)}) is deprecated and "
                          "will be removed in the next release; pass training=LocalTraining(...)",
                          DeprecationWarning, stacklevel=2)
            fields = {LEGACY_TRAINING[k]: v for k, v in legacy.items()}
            if fields.get("optimizer_kwargs", ()) is None:
                fields["optimizer_kwargs"] = {}
            training = LocalTraining(**fields)
            self._training_names.update({LEGACY_TRAINING[k]: k for k in legacy})
        self.model = model
        self.data = data
        self.strategy = strategy
        self.training = LocalTraining() if training is None else training
        self.rounds = rounds
        self.clients_per_round = clients_per_round
        self.sampling = sampling
        self.min_clients = min_clients
        self.dropout = dropout
        self.stragglers = stragglers
        self.straggler_policy = straggler_policy
        self.device_profile = device_profile
        self.deadline = deadline
        self.over_select = over_select
        self.async_buffer = async_buffer
        self.max_concurrency = max_concurrency
        self.executor = executor
        self.workers = workers
        self.local_update = local_update
        self.eval_every = eval_every
        self.federated_eval = federated_eval
        self.personalize_epochs = personalize_epochs
        self.shared_layers = shared_layers
        self.test_data = test_data
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.seed = seed
        self.options = options

    # -- checks ---------------------------------------------------------------------------
    def _clients(self) -> list[ClientData]:
        clients = list(self.data.clients if isinstance(self.data, FederatedData) else self.data)
        if not clients or not all(isinstance(c, ClientData) for c in clients):
            raise TypeError("data must be a FederatedData or a non-empty sequence of ClientData")
        ids = [c.client_id for c in clients]
        if len(set(ids)) != len(ids):
            raise ValueError("client ids must be unique")
        for c in clients:
            for split in ("train", "test"):
                n = len(getattr(c, f"x_{split}"))
                lengths = getattr(c, f"lengths_{split}")
                if len(getattr(c, f"y_{split}")) != n or (lengths is not None and len(lengths) != n):
                    raise ValueError(
                        f"client {c.client_id!r}: x_{split}, y_{split} (and lengths_{split}) "
                        "must have the same number of examples"
                    )
        return clients

    def _check_settings(self) -> None:
        for name in ("rounds", "min_clients", "checkpoint_every"):
            check_int_range(name, getattr(self, name), 1)
        check_int_range("eval_every", self.eval_every, 0)
        check_int_range("personalize_epochs", self.personalize_epochs, 0)
        check_int_range("seed", self.seed, 0)
        for name in ("dropout", "stragglers"):
            check_real_range(name, getattr(self, name), 0, 1, include_high=False)
        check_choice("sampling", self.sampling, SAMPLINGS)
        if not isinstance(self.device_profile, Mapping):
            check_choice("device_profile", self.device_profile, POPULATIONS)
        check_positive_float("deadline", self.deadline, allow_none=True)
        check_real_range("over_select", self.over_select, 1)
        self._check_async()
        if self.over_select > 1 and self.sampling == "poisson":
            raise InputValueError("over_select > 1 needs sampling='fixed': over-selection keeps "
                                  "a fixed number of first finishers")
        if self.straggler_policy not in ("drop", "partial"):
            raise InputValueError(
                f"straggler_policy must be 'drop' or 'partial', got {self.straggler_policy!r}"
            )
        if self.strategy is not None and not isinstance(self.strategy, Strategy):
            raise InputTypeError(f"strategy must be a Strategy, got {type(self.strategy).__name__}")
        if self.options is not None and not isinstance(self.options, Mapping):
            raise InputTypeError(f"options must be a mapping, got {type(self.options).__name__}")
        self._check_training()

    def _check_async(self) -> None:
        if self.async_buffer is None:
            if self.max_concurrency is not None:
                raise InputValueError("max_concurrency needs async_buffer (it limits the clients "
                                      "training at once in asynchronous aggregation)")
            return
        check_int_range("async_buffer", self.async_buffer, 1)
        if self.max_concurrency is not None:
            check_int_range("max_concurrency", self.max_concurrency, 1)
        clash = [name for name, on in (("deadline", self.deadline is not None),
                                       ("over_select", self.over_select != 1),
                                       ("sampling='poisson'", self.sampling == "poisson")) if on]
        if clash:
            raise InputValueError(f"async_buffer has no rounds to apply {clash[0]} to; leave it "
                                  "out with asynchronous aggregation")
        if self.strategy is not None and any(isinstance(s, DPAggregate)
                                             for s in self.strategy.layers()):
            raise InputValueError("async_buffer cannot be combined with DP: the accountant "
                                  "analyses sampled rounds")

    def _check_training(self) -> None:
        t, names = self.training, self._training_names
        if not isinstance(t, LocalTraining):
            raise InputTypeError(f"training must be a LocalTraining, got {type(t).__name__}")
        check_int_range(names["batch_size"], t.batch_size, 1)
        for field in ("epochs", "steps"):
            value = getattr(t, field)
            if field == "steps" and value is None:
                continue
            if isinstance(value, Mapping):
                for cid, v in value.items():
                    check_int_range(f"{names[field]}[{cid!r}]", v, 1)
            else:
                check_int_range(names[field], value, 1)
        check_real_range(names["lr"], t.lr, 0, include_low=False)
        for field in ("clip_norm", "time_budget"):
            check_positive_float(names[field], getattr(t, field), allow_none=True)
        if not callable(t.optimizer) and t.optimizer not in ("sgd", "adam", "adamw"):
            raise InputValueError(
                f"{names['optimizer']} must be 'sgd', 'adam', 'adamw' or a callable, "
                f"got {t.optimizer!r}"
            )
        if not isinstance(t.optimizer_kwargs, Mapping):
            raise InputTypeError(f"{names['optimizer_kwargs']} must be a mapping, got "
                                 f"{type(t.optimizer_kwargs).__name__}")

    def _identity(self, strategy: Strategy, clients: list[ClientData]) -> dict:
        """What a checkpoint must agree with to be resumed by this simulation.

        Everything that shapes the model or the history's figures: the settings, the local
        training, the model's configuration, the data (ids, sizes and a hash of every array),
        the centralized test set, the strategy as its stages describe it, and the caller's
        ``options`` — but not ``rounds`` (a resumed run may go on longer), how often it
        evaluates or checkpoints, or where it runs (executors give the same bits).
        """
        settings = ("clients_per_round", "sampling", "min_clients", "dropout", "stragglers",
                    "straggler_policy", "device_profile", "deadline", "over_select",
                    "personalize_epochs", "shared_layers", "async_buffer", "max_concurrency",
                    "local_update", "seed")
        return {
            "options": describe(dict(self.options or {})),
            "simulation": {name: describe(getattr(self, name)) for name in settings},
            "training": describe(self.training),
            "model": {k: describe(v) for k, v in self.model.config().items()},
            "num_params": int(self.model.flat_params.size),
            "dtype": str(self.model.flat_params.dtype),
            "data": data_fingerprint(clients),
            "test_data": None if self.test_data is None else array_digest(*self.test_data),
            "strategy": strategy.describe(),
        }

    def check(self) -> None:
        """Refuse settings that would make every client or every round fail, without running.

        What :meth:`run` checks first, callable on its own (the ``npgru`` command calls it
        before it draws a progress bar).

        Raises
        ------
        TypeError, ValueError
            An :class:`~npgru._checks.InputError` naming the setting and its valid range.
        """
        self._checked()

    def _checked(self) -> tuple[list[ClientData], int, Strategy]:
        """:meth:`check`, returning the clients, the clients per round and the strategy."""
        self._check_settings()
        clients = self._clients()
        if self.async_buffer is not None and self.async_buffer > len(clients):
            raise InputValueError(f"async_buffer must be at most the number of clients "
                                  f"({len(clients)}), got {self.async_buffer}")
        if isinstance(self.device_profile, Mapping):  # the user's table covers every client
            device_table(self.device_profile, int(self.seed), [c.client_id for c in clients])
        per_round = clients_per_round_count(self.clients_per_round, len(clients))
        strategy = self.strategy if self.strategy is not None else FedAvg()
        need = max(int(self.min_clients), strategy.min_clients)
        if need > per_round:
            raise InputValueError(
                f"a round needs {need} valid updates (min_clients={self.min_clients}, "
                f"the strategy's min_clients={strategy.min_clients}) but clients_per_round="
                f"{self.clients_per_round!r} samples only {per_round}: every round would fail"
            )
        if self.async_buffer is not None and need > self.async_buffer:
            raise InputValueError(f"an update needs {need} valid updates but async_buffer="
                                  f"{self.async_buffer} buffers fewer: every update would fail")
        self.training.check_optimizer(clone_model(self.model))
        if self.shared_layers is not None:
            local_mask(self.model, self.shared_layers)
        return clients, per_round, strategy

    # -- running --------------------------------------------------------------------------
    def run(self, resume: bool = False, callback: Callable | None = None) -> History:
        """Run the simulation up to ``rounds``.

        Parameters
        ----------
        resume : bool, default False
            Continue from ``checkpoint_dir``'s checkpoint if there is one (the settings must
            match those it was written with); otherwise start from ``model``.
        callback : callable, optional
            ``callback(record)`` after every round (after its checkpoint).

        Returns
        -------
        History
            Also kept as ``history_``.

        Raises
        ------
        ValueError
            On invalid settings, or a checkpoint written by a different simulation.
        """
        if resume and self.checkpoint_dir is None:
            raise InputValueError("resume=True needs checkpoint_dir (where the checkpoint is)")
        clients, per_round, strategy = self._checked()
        ids = [c.client_id for c in clients]
        self._min_clients = max(int(self.min_clients), strategy.min_clients)
        model = clone_model(self.model)
        model.flat_params[...] = self.model.flat_params
        model.eval()
        params = model.flat_params  # the global parameters, updated in place by commits
        strategy.initialize(params, len(clients))
        # over-selection samples more and counts the first per_round finishers
        sampled = min(len(clients), math.ceil(float(self.over_select) * per_round - 1e-9))
        self._keep = per_round if sampled > per_round else None
        self._plan = SamplingPlan(self.sampling, sampled, len(clients))
        strategy.set_sampling(self._plan)
        # DP's sampling rate holds over the whole population, so only then are offline drawn
        self._online_only = self.sampling == "fixed" and not any(
            isinstance(s, DPAggregate) for s in strategy.layers())
        self._clock = build_clock(int(self.model.flat_params.size), clients, self.training,
                                  self.device_profile, int(self.seed), self.deadline,
                                  self.straggler_policy == "partial")
        self._sim_time = 0.0
        meta = self._identity(strategy, clients)
        self.model_, self.strategy_, self.history_ = model, strategy, History()
        self.client_states_: dict[str, dict[str, np.ndarray]] = {}
        start = 0
        path = None if self.checkpoint_dir is None else os.path.join(self.checkpoint_dir,
                                                                     CHECKPOINT_NAME)
        if self.checkpoint_dir is not None:  # what writes killed mid-checkpoint left behind
            remove_stale_temp_files(self.checkpoint_dir)
        if resume and path is not None and os.path.exists(path):
            start = self._restore(path, load_checkpoint(path), meta, strategy)
        test_set = self._test_set(clients)
        executor = make_executor(self.executor, self.workers)
        update = self.local_update or local_update
        self._mask = None if self.shared_layers is None else local_mask(model, self.shared_layers)
        if self._mask is not None:
            update = SharedLayersUpdate(self._mask, update)
        update = strategy.client_update(update)
        self._personal = getattr(update, "personal_state", None) is not None  # Ditto
        executor.start(self.model, clients, self.training, update)
        fedbuff = None
        if self.async_buffer is not None:
            fedbuff = FedBuff(self, strategy, executor, ids, int(self.async_buffer),
                              int(self.max_concurrency or per_round))
            fedbuff.load_state(self.client_states_, start)
            records = fedbuff.records(self.rounds)
        else:
            records = (self._round(t, ids, strategy, executor)
                       for t in range(start + 1, self.rounds + 1))
        with executor:
            for record in records:
                t = record["round"]
                if self.eval_every and (t % self.eval_every == 0 or t == self.rounds):
                    record.update(self._evaluate(executor, clients, test_set, t))
                self.history_.records.append(record)
                if path is not None and (t % self.checkpoint_every == 0 or t == self.rounds):
                    states = self.client_states_
                    if fedbuff is not None:  # and the clients in flight
                        states = {**states, **fedbuff.state()}
                    save_checkpoint(path, params=params, server_round=t, meta=meta,
                                    strategy_state=strategy.state_dict(),
                                    client_states=states, history=self.history_.records)
                if callback is not None:
                    callback(record)
        return self.history_

    def _restore(self, path: str, ckpt: dict, meta: dict, strategy: Strategy) -> int:
        diffs = differences(ckpt["meta"], meta)
        if diffs:
            # the caller's options, if any differ, say why the data or the model differ too
            options = [d for d in diffs if d[0].startswith("options.")]
            diffs = options or diffs
            shown = "; ".join(f"{key.removeprefix('options.')}: checkpoint {_short(saved)}, "
                              f"now {_short(now)}" for key, saved, now in diffs[:3])
            more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
            raise InputValueError(
                f"cannot resume from {path}: it was written by a different run ({shown}{more}); "
                "resume with the same data and settings, or start afresh elsewhere"
            )
        if ckpt["round"] > self.rounds:
            raise InputValueError(
                f"rounds={self.rounds} is smaller than round {ckpt['round']} of the checkpoint "
                f"{path}: resuming can only go on to more rounds"
            )
        check_restorable(ckpt, self.model_.flat_params, strategy.state_dict(), path)
        self.model_.flat_params[...] = ckpt["params"]
        strategy.load_state_dict(ckpt["strategy_state"])
        self.client_states_ = ckpt["client_states"]
        self.history_ = History(ckpt["history"])
        self._sim_time = float(self.history_[-1]["sim_time"]) if len(self.history_) else 0.0
        return ckpt["round"]

    def _fate(self, server_round: int, client_id: str) -> tuple[str | None, float]:
        """(drop reason or None, work fraction) of a sampled client, from its system stream."""
        u = make_rng(self.seed, server_round, SYSTEM, client_id).random(3)
        if u[0] < self.dropout:
            return "dropout: client unavailable this round", 1.0
        if u[1] < self.stragglers:
            if self.straggler_policy == "drop":
                return "straggler: missed the round's deadline", 1.0
            return None, float(u[2])
        return None, 1.0

    def _sample(self, t: int, ids: list[str]) -> list[str]:
        """The clients of round ``t``: with online-only sampling, first wait (on the simulated
        clock) until a client is online, then draw among those online; else from all ``ids``."""
        if not self._online_only:
            return self._plan.sample(ids, self.seed, t)
        profiles = self._clock.profiles
        self._sim_time = min(profiles[c].next_online(self._sim_time) for c in ids)
        online = [c for c in ids if profiles[c].online_for(self._sim_time) > 0]
        return sample_clients(online, min(self._plan.size, len(online)), self.seed, t)

    def _round(self, t: int, ids: list[str], strategy: Strategy, executor: Executor) -> dict:
        start = time.perf_counter()
        params = self.model_.flat_params
        sampled = self._sample(t, ids)
        config = strategy.configure_fit(t)
        dropped: dict[str, str] = {}
        partial: dict[str, float] = {}
        tasks = []
        finish: dict[str, float] = {}  # when the server has each client's result, or its drop
        # what a device downloads (its state stays on it) and, at most, uploads: a float64 delta
        self._down = params.nbytes + sum(a.nbytes for a in config.arrays.values())
        for cid in sampled:
            reason, work = self._fate(t, cid)
            if reason is None:
                ins = FitIns(cid, t, int(self.seed), config.hooks, config.arrays,
                             self.client_states_.get(cid, {}), work)
                # its device: offline, too slow for the deadline, or a share of its work
                reason, work = self._clock.plan(cid, self._sim_time, work, self._down,
                                                8 * params.size)
                if reason is not None:  # known when its device goes offline or time is up
                    finish[cid] = self._clock.limit(cid, self._sim_time)
            if reason is not None:
                dropped[cid] = reason
                continue
            ins.work_fraction = work
            if work < 1.0:
                partial[cid] = work
            tasks.append(ins)
        bytes_down = sum(params.nbytes + ins.nbytes for ins in tasks)
        bytes_up, loss_sum, loss_weight = 0, 0.0, 0
        agg = strategy.begin_aggregate(t)
        new_states = {}
        for res, reason, finish_s in self._received(executor.fit(params, tasks), tasks, strategy):
            bytes_up += res.nbytes
            finish[res.client_id] = finish_s
            if reason is not None:
                dropped[res.client_id] = reason
                continue
            try:
                agg.add(res)
            except UnusableResult as e:  # e.g. FedNova without the client's step count
                dropped[res.client_id] = f"unusable result: {e}"
                continue
            new_states[res.client_id] = res.state
            if "loss" in res.metrics:
                loss_sum += res.num_examples * float(res.metrics["loss"])
                loss_weight += res.num_examples
        status, failure, committed_metrics = self._close(t, strategy, agg, new_states)
        record = {
            "round": t,
            "status": status,
            "sampled": sampled,
            "ok": agg.client_ids,
            "dropped": dropped,
            "partial": partial,
            "num_sampled": len(sampled),
            "num_ok": agg.count,
            "train_loss": _json_number(loss_sum / loss_weight) if loss_weight else None,
            "bytes_up": int(bytes_up),
            "bytes_down": int(bytes_down),
        }
        record.update(committed_metrics)
        if failure is not None:
            record["failure"] = failure
        record["wall_time"] = time.perf_counter() - start
        self._sim_time += self._duration(agg.client_ids, finish, sampled)
        record["sim_time"] = self._sim_time
        return record

    def _received(self, results, tasks: list[FitIns], strategy: Strategy):
        """``(result, drop reason or None, finish seconds)`` in sampling order.

        A result is dropped if invalid, if it arrived after its deadline or its device went
        offline, or — with over-selection — if it is not among the first finishers.
        """
        params = self.model_.flat_params
        work = {ins.client_id: ins.work_fraction for ins in tasks}

        def judged(res):
            reason = check_result(res, params.size, params.dtype)
            up = res.nbytes if reason is not None else strategy.upload_nbytes(res)
            took = self._clock.time(res.client_id, work[res.client_id], self._down, up)
            if reason is None:
                reason = self._clock.late(res.client_id, self._sim_time, took)
            return res, reason, took.finish_s

        if self._keep is None:
            yield from map(judged, results)
            return
        received = [judged(res) for res in results]  # the first finishers need all the times
        first = first_finishers([(res.client_id, f) for res, reason, f in received
                                 if reason is None], self._keep)
        for res, reason, f in received:
            if reason is None and res.client_id not in first:
                reason = f"over-selection: not among the first {self._keep} finishers"
            yield res, reason, f

    def _duration(self, counted: list[str], finish: dict[str, float],
                  sampled: list[str]) -> float:
        """Simulated seconds of the round: its slowest counted client. With none counted: until
        the first sampled device comes online if all were offline (only when sampling the whole
        population: the server waits for one to check in), else the deadline, or until the last
        client trained or went offline (0 if none did either)."""
        if counted:
            return max(finish[cid] for cid in counted)
        waits = [self._clock.profiles[c].offline_for(self._sim_time) for c in sampled]
        if waits and min(waits) > 0:
            return min(waits)
        if self.deadline is not None:
            return float(self.deadline)
        return max(finish.values(), default=0.0)

    def _close(self, t: int, strategy: Strategy, agg, new_states: dict) -> tuple[str, str | None, dict]:
        """Commit an aggregate that has enough valid updates: ``(status, failure, metrics)``."""
        if agg.count < self._min_clients:
            return "failed", f"{agg.count} valid updates, fewer than min_clients={self._min_clients}", {}
        failure = self._commit(t, strategy, agg)
        if failure is not None:
            return "failed", failure, {}
        self.client_states_.update(new_states)
        return "ok", None, strategy.round_metrics()

    def _commit(self, t: int, strategy: Strategy, agg) -> str | None:
        """Commit the round, or restore everything and say why not (non-finite result)."""
        params = self.model_.flat_params
        backup = strategy.state_dict()
        candidate = params.copy()
        with np.errstate(over="ignore", invalid="ignore"):  # detected just below
            strategy.commit(t, candidate, agg)
        if not np.isfinite(candidate).all():
            strategy.load_state_dict(backup)
            return "the aggregated model is non-finite; the round was discarded"
        params[...] = candidate
        return None

    # -- evaluation -----------------------------------------------------------------------
    def _test_set(self, clients: list[ClientData]) -> tuple | None:
        if self.test_data is not None:
            x, y, *rest = self.test_data
            return x, y, (rest[0] if rest else None)
        with_test = [c for c in clients if c.num_test]
        if not with_test or not self.eval_every:
            return None
        try:
            x = np.concatenate([c.x_test for c in with_test])
            y = np.concatenate([c.y_test for c in with_test])
        except ValueError as e:
            raise ValueError(
                f"cannot pool the clients' test splits for centralized evaluation ({e}); "
                "pass test_data=(X, y[, lengths])"
            ) from e
        has_lengths = [c.lengths_test is not None for c in with_test]
        if any(has_lengths) and not all(has_lengths):
            raise ValueError("either every client's test split has lengths or none does")
        lengths = np.concatenate([c.lengths_test for c in with_test]) if all(has_lengths) else None
        return x, y, lengths

    def _evaluate(self, executor: Executor, clients: list[ClientData], test_set,
                  server_round: int) -> dict:
        start = time.perf_counter()
        out: dict = {}
        if test_set is not None:
            # one BLAS thread, as the executors' clients: the same bits on any number of cores
            # (and 5x faster than two threads on a busy 2-core machine)
            with single_blas_thread():
                metrics = self.model_.evaluate(*test_set)
            out.update({f"test_{k}": _json_number(v) for k, v in metrics.items()})
        if self.federated_eval:
            ids = [c.client_id for c in clients if c.num_test]
            results = list(executor.evaluate(self.model_.flat_params, ids))
            errors = {r.client_id: r.error for r in results if r.error is not None}
            results = [r for r in results if r.error is None]
            if results:
                out.update(federated_summary(results))
            if errors:
                out["fed_errors"] = errors
        if self.personalize_epochs or self._mask is not None or self._personal:
            results = personalized_evaluation(
                clone_model(self.model), clients, self.model_.flat_params, self.client_states_,
                self.training, int(self.personalize_epochs), int(self.seed), server_round,
                self._mask, self.local_update or local_update)
            errors = {r.client_id: r.error for r in results if r.error is not None}
            results = [r for r in results if r.error is None]
            if results:
                out.update(federated_summary(results, prefix="personalized"))
            if errors:
                out["personalized_errors"] = errors
        out["eval_s"] = time.perf_counter() - start  # not in wall_time: the round's own cost
        return out


def federated_summary(results, prefix: str = "fed") -> dict:
    """Weighted means and worst-decile means of per-client evaluation results.

    For each metric: ``fed_<metric>`` is the mean weighted by test-set size, and
    ``fed_<metric>_worst10`` the plain mean over the worst ⌈10 %⌉ of clients (lowest accuracy,
    highest loss). ``fed_clients`` keeps every client's metrics. ``prefix`` replaces ``fed``.
    """
    weights = np.array([r.num_examples for r in results], dtype=np.float64)
    out: dict = {}
    for key in results[0].metrics:
        values = np.array([r.metrics[key] for r in results], dtype=np.float64)
        worst = np.sort(values)
        if key != "accuracy":  # a high loss is bad; a low accuracy is bad
            worst = worst[::-1]
        k = math.ceil(0.1 * len(values))
        out[f"{prefix}_{key}"] = _json_number(np.dot(weights, values) / weights.sum())
        out[f"{prefix}_{key}_worst10"] = _json_number(worst[:k].mean())
    out[f"{prefix}_clients"] = {
        r.client_id: {k: _json_number(v) for k, v in r.metrics.items()} for r in results
    }
    return out
