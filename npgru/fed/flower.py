"""Flower adapter: npgru models on real devices (or Flower's simulation), npgru's round loop.

Two ways to use Flower (``pip install npgru[flower]``, Flower ≥ 1.20):

- **npgru end to end** — :func:`client_app` turns a model and a data loader into a Flower
  ``ClientApp`` and :class:`FlowerServer` gives a ``ServerApp`` that runs npgru's own
  :class:`~npgru.fed.Simulation` round loop, with any npgru strategy, over Flower's transport:
  the loop hands each round to an executor that sends one message per sampled client to the
  node that holds it and yields the replies in sampling order. Sampling, drop-outs, stragglers,
  hooks (FedProx, SCAFFOLD, compression), aggregation and checkpoints are npgru's, and so are
  the seeds: with the same data and seed the global model is the one
  :class:`~npgru.fed.Simulation` computes in one process, bit for bit.
- **Flower's strategies** — :func:`numpy_client` gives a ``flwr.client.NumPyClient`` for the older
  API: parameters travel as the fixed-order list of the model's arrays (its state-dict order),
  so Flower's own strategies (FedAvg, FedProx, Krum, …) can drive npgru models.

What travels in a message is plain data only: arrays (``np.save`` without pickle), numbers and
strings. A client hook (FedProx's proximal term, …) is sent as its class name and attributes
and rebuilt on the device only if its class lives in ``npgru`` — a server cannot make a device
run arbitrary code.

Evaluation: the server's round loop evaluates the global model on ``test_data`` given to
:class:`FlowerServer`; per-client (federated) evaluation over Flower is not available yet, since
:class:`~npgru.fed.Simulation` learns which clients have test data from the data it holds.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..datasets.base import ClientData
from .client import (
    ClientHook,
    EvalRes,
    FitIns,
    FitRes,
    LocalTraining,
    _per_client,
    evaluate_client,
    local_update,
    run_fit,
)
from .executors import Executor, clone_model
from .simulation import Simulation

QUERY, TRAIN, EVALUATE = "query", "train", "evaluate"
_SCALARS = (bool, int, float, str)


# -- what travels: FitIns / FitRes / EvalRes as Flower records ----------------------------------
def _arrays(flwr, arrays: Mapping[str, np.ndarray]):
    return flwr.app.ArrayRecord({k: flwr.app.Array(np.asarray(v)) for k, v in arrays.items()})


def _numpy(record) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _scalars(values: Mapping[str, Any], what: str) -> dict:
    """``values`` without ``None`` entries; anything but a plain scalar is refused."""
    out = {}
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, np.generic):
            v = v.item()
        if not isinstance(v, _SCALARS):
            raise TypeError(f"{what} {k!r} is a {type(v).__name__}; only numbers and strings "
                            "can travel in a Flower message")
        out[k] = v
    return out


def encode_fit_ins(flwr, params: np.ndarray, ins: FitIns, training: LocalTraining):
    """The ``train`` message content for one client: parameters, instruction, its settings."""
    if callable(training.optimizer):
        raise TypeError("a callable optimizer cannot travel to Flower clients; name one "
                        "('sgd', 'adam', 'adamw')")
    cid = ins.client_id
    settings = dict(optimizer=training.optimizer, lr=training.lr,
                    batch_size=training.batch_size,
                    epochs=_per_client(training.epochs, cid, 1),
                    steps=_per_client(training.steps, cid, None),
                    clip_norm=training.clip_norm, time_budget=training.time_budget)
    content = flwr.app.RecordDict({
        "params": _arrays(flwr, {"params": params}),
        "ins": flwr.app.ConfigRecord(dict(client_id=cid, server_round=ins.server_round,
                                          seed=ins.seed, work_fraction=ins.work_fraction)),
        "ins.arrays": _arrays(flwr, ins.arrays),
        "ins.state": _arrays(flwr, ins.state),
        "training": flwr.app.ConfigRecord(_scalars(settings, "setting")),
        "optimizer_kwargs": flwr.app.ConfigRecord(
            _scalars(training.optimizer_kwargs, "optimizer_kwargs")),
    })
    hooks, hook_arrays = {}, {}
    for i, hook in enumerate(ins.hooks):
        cls = type(hook)
        hooks[f"{i}"] = f"{cls.__module__}:{cls.__qualname__}"
        for name, value in vars(hook).items():
            if isinstance(value, np.ndarray):
                hook_arrays[f"{i}.{name}"] = value
            else:
                hooks.update(_scalars({f"{i}.{name}": value}, f"{cls.__name__} attribute"))
    content["hooks"] = flwr.app.ConfigRecord(hooks)
    content["hooks.arrays"] = _arrays(flwr, hook_arrays)
    return content


def decode_fit_ins(content) -> tuple[np.ndarray, FitIns, LocalTraining]:
    """Inverse of :func:`encode_fit_ins`; rebuilds only hooks whose class is npgru's."""
    ins, settings = dict(content["ins"]), dict(content["training"])
    hook_values = dict(content["hooks"])
    attrs = {**hook_values, **_numpy(content["hooks.arrays"])}
    hooks = []
    for i in sorted((k for k in hook_values if "." not in k), key=int):
        module, _, qualname = hook_values[i].partition(":")
        if module != "npgru" and not module.startswith("npgru."):
            raise ValueError(f"refusing client hook {hook_values[i]!r}: not an npgru class")
        cls = getattr(importlib.import_module(module), qualname)
        if not (isinstance(cls, type) and issubclass(cls, ClientHook)):
            raise ValueError(f"{hook_values[i]!r} is not a ClientHook")
        hook = cls.__new__(cls)  # attributes restored as sent, as pickle would, minus pickle
        prefix = f"{i}."
        vars(hook).update({k[len(prefix):]: v for k, v in attrs.items() if k.startswith(prefix)})
        hooks.append(hook)
    fit_ins = FitIns(str(ins["client_id"]), int(ins["server_round"]), int(ins["seed"]),
                     tuple(hooks), _numpy(content["ins.arrays"]), _numpy(content["ins.state"]),
                     float(ins["work_fraction"]))
    training = LocalTraining(optimizer_kwargs=dict(content["optimizer_kwargs"]), **settings)
    return content["params"]["params"].numpy(), fit_ins, training


def encode_fit_res(flwr, res: FitRes):
    content = flwr.app.RecordDict({
        "res": flwr.app.ConfigRecord(_scalars(
            dict(client_id=res.client_id, num_examples=res.num_examples, error=res.error),
            "result field")),
        "metrics": flwr.app.ConfigRecord(_scalars(res.metrics, "metric")),
        "state": _arrays(flwr, res.state),
        "extras": _arrays(flwr, res.extras),
    })
    if res.delta is not None:
        content["delta"] = _arrays(flwr, {"delta": res.delta})
    return content


def decode_fit_res(content) -> FitRes:
    res = dict(content["res"])
    return FitRes(client_id=str(res["client_id"]),
                  delta=content["delta"]["delta"].numpy() if "delta" in content else None,
                  num_examples=int(res["num_examples"]), metrics=dict(content["metrics"]),
                  state=_numpy(content["state"]), extras=_numpy(content["extras"]),
                  error=res.get("error"))


# -- the device side ----------------------------------------------------------------------------
def client_app(model, load_client: Callable[[Any], ClientData],
               update: Callable = local_update):
    """A Flower ``ClientApp`` that trains and evaluates ``model`` on one client's data.

    Parameters
    ----------
    model : Module
        The architecture (its ``config()``); parameters come from the server every round.
    load_client : callable
        ``load_client(context) -> ClientData``: this node's data, loaded once per node. In a
        Flower simulation ``context.node_config["partition-id"]`` says which partition; on a
        device it reads local files.
    update : callable, default :func:`~npgru.fed.client.local_update`
        The local update, as in :class:`~npgru.fed.Simulation`.

    Notes
    -----
    Local-training settings (optimizer, learning rate, batch size, epochs or steps, clipping,
    time budget) come from the server with each round, so a Flower run trains exactly as an
    npgru simulation with the same settings.
    """
    flwr = _import_flwr()
    app = flwr.clientapp.ClientApp()
    # Built on first use, in the process that runs the app: the app travels to its workers
    # pickled, and arrays that arrive that way may be read-only.
    local: list = []
    nodes: dict[int, ClientData] = {}

    def model_of():
        if not local:
            local.append(clone_model(model))
        return local[0]

    def data_of(context) -> ClientData:
        if context.node_id not in nodes:
            data = load_client(context)
            if not isinstance(data, ClientData):
                raise TypeError(f"load_client must return a ClientData, got {type(data).__name__}")
            nodes[context.node_id] = data
        return nodes[context.node_id]

    def reply(msg, content):
        return flwr.app.Message(content, reply_to=msg)

    @app.query()
    def query(msg, context):
        data = data_of(context)
        return reply(msg, flwr.app.RecordDict({"client": flwr.app.ConfigRecord(dict(
            client_id=data.client_id, num_train=data.num_train, num_test=data.num_test))}))

    @app.train()
    def train(msg, context):
        params, ins, training = decode_fit_ins(msg.content)
        data = data_of(context)
        if ins.client_id != data.client_id:
            res = FitRes(ins.client_id, error=f"node holds {data.client_id!r}, not {ins.client_id!r}")
        else:
            res = run_fit(update, model_of(), data, params, ins, training)
        return reply(msg, encode_fit_res(flwr, res))

    @app.evaluate()
    def evaluate(msg, context):
        res = evaluate_client(model_of(), data_of(context),
                              msg.content["params"]["params"].numpy())
        return reply(msg, flwr.app.RecordDict({
            "res": flwr.app.ConfigRecord(_scalars(dict(num_examples=res.num_examples,
                                                       error=res.error), "result field")),
            "metrics": flwr.app.ConfigRecord(_scalars(res.metrics, "metric")),
        }))

    return app


# -- the server side ----------------------------------------------------------------------------
class GridExecutor(Executor):
    """An executor whose clients are Flower nodes reached through a ``Grid``.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
    nodes : dict of str to int
        Client id → the node id that holds that client.
    timeout : float, optional
        Seconds to wait for a round's replies; a client that has not answered by then is
        dropped from the round. ``None`` waits for every reply.
    """

    def __init__(self, grid, nodes: Mapping[str, int], timeout: float | None = None) -> None:
        self.grid, self.nodes, self.timeout = grid, dict(nodes), timeout

    def start(self, model, clients, training, update) -> None:
        # ``update`` runs on the devices: it is the ClientApp's, not the server's
        self._training = training

    def _exchange(self, message_type: str, contents: Sequence[tuple[str, Any]]) -> dict:
        """Send ``(client id, content)`` messages; return client id -> reply (if any)."""
        flwr = _import_flwr()
        messages = [flwr.app.Message(content, dst_node_id=self.nodes[cid],
                                     message_type=message_type) for cid, content in contents]
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        by_node = {reply.metadata.src_node_id: reply for reply in replies}
        return {cid: by_node.get(self.nodes[cid]) for cid, _ in contents}

    def fit(self, params, tasks) -> Any:
        flwr = _import_flwr()
        replies = self._exchange(TRAIN, [(ins.client_id, encode_fit_ins(flwr, params, ins,
                                                                        self._training))
                                         for ins in tasks])
        for ins in tasks:
            reply = replies[ins.client_id]
            if reply is None:
                yield FitRes(ins.client_id, error="no reply from its Flower node in time")
            elif reply.has_error():
                yield FitRes(ins.client_id, error=f"Flower node error: {reply.error.reason}")
            else:
                yield decode_fit_res(reply.content)

    def evaluate(self, params, client_ids) -> Any:
        flwr = _import_flwr()
        content = flwr.app.RecordDict({"params": _arrays(flwr, {"params": params})})
        replies = self._exchange(EVALUATE, [(cid, content) for cid in client_ids])
        for cid in client_ids:
            reply = replies[cid]
            if reply is None or reply.has_error():
                why = "no reply in time" if reply is None else reply.error.reason
                yield EvalRes(cid, 0, {}, error=f"Flower node: {why}")
            else:
                res = dict(reply.content["res"])
                yield EvalRes(cid, int(res["num_examples"]), dict(reply.content["metrics"]),
                              error=res.get("error"))


class FlowerServer:
    """npgru's round loop as a Flower ``ServerApp`` (see :meth:`server_app`).

    Parameters
    ----------
    model : Module
        The initial global model.
    strategy : Strategy, optional
        Any npgru strategy; default FedAvg.
    client_ids : sequence of str, optional
        The clients to wait for, in the order that sampling and aggregation use. Default: every
        client that has connected after ``wait_timeout`` (or as soon as ``min_nodes`` have),
        sorted by id.
    min_nodes : int, optional
        Start as soon as this many nodes are connected (default: ``len(client_ids)`` if given).
    wait_timeout : float, default 60
        Seconds to wait for the nodes before the first round.
    round_timeout : float, optional
        Seconds to wait for a round's replies (``None``: every reply).
    **settings
        :class:`~npgru.fed.Simulation` settings: ``rounds``, ``clients_per_round``,
        ``training`` (a :class:`~npgru.fed.LocalTraining`), ``seed``, ``test_data``,
        ``checkpoint_dir``, …
        (not ``executor``, ``workers`` or ``local_update``: the devices run the update).
        The server does not see the devices' data, so the records' ``sim_time`` counts only
        the simulated transfers, no local training.

    Attributes
    ----------
    simulation_ : Simulation
        After a run: ``simulation_.model_`` is the global model, ``simulation_.history_`` the
        per-round records.
    """

    def __init__(self, model, strategy=None, *, client_ids: Sequence[str] | None = None,
                 min_nodes: int | None = None, wait_timeout: float = 60.0,
                 round_timeout: float | None = None, **settings) -> None:
        refused = sorted({"executor", "workers", "local_update", "data"} & set(settings))
        if refused:
            raise TypeError(f"FlowerServer sets {refused} itself; the devices run the update")
        self.model, self.strategy = model, strategy
        self.client_ids = None if client_ids is None else list(client_ids)
        self.min_nodes = min_nodes
        self.wait_timeout, self.round_timeout = wait_timeout, round_timeout
        self.settings = settings

    def server_app(self):
        """A Flower ``ServerApp`` whose main function is :meth:`run`."""
        flwr = _import_flwr()
        app = flwr.serverapp.ServerApp()

        @app.main()
        def main(grid, context) -> None:
            self.run(grid)

        return app

    def run(self, grid) -> Simulation:
        """Find the clients behind ``grid``'s nodes, then run the simulation over them."""
        nodes = self._discover(grid)
        # Placeholders: the round loop needs each client's id, the data stays on the device.
        empty = np.empty((0,))
        placeholders = [ClientData(cid, empty, empty, empty, empty) for cid in nodes]
        self.simulation_ = Simulation(
            self.model, placeholders, self.strategy,
            executor=GridExecutor(grid, nodes, self.round_timeout), **self.settings)
        self.simulation_.run()
        return self.simulation_

    def _discover(self, grid) -> dict[str, int]:
        """Client id -> node id for the connected nodes, in the order sampling will use."""
        flwr = _import_flwr()
        wanted = self.min_nodes or (len(self.client_ids) if self.client_ids else None)
        deadline = time.monotonic() + self.wait_timeout
        node_ids = list(grid.get_node_ids())
        while (wanted is None or len(node_ids) < wanted) and time.monotonic() < deadline:
            time.sleep(0.5)
            node_ids = list(grid.get_node_ids())
        messages = [flwr.app.Message(flwr.app.RecordDict(), dst_node_id=n, message_type=QUERY)
                    for n in node_ids]
        found, errors = {}, []
        for reply in grid.send_and_receive(messages, timeout=self.wait_timeout):
            if reply.has_error():
                errors.append(reply.error.reason)
            else:
                found[str(reply.content["client"]["client_id"])] = reply.metadata.src_node_id
        if self.client_ids is None:
            return {cid: found[cid] for cid in sorted(found)}
        missing = [cid for cid in self.client_ids if cid not in found]
        if missing:
            raise RuntimeError(f"clients {missing} did not answer within {self.wait_timeout} s"
                               + (f"; node errors: {errors}" if errors else ""))
        return {cid: found[cid] for cid in self.client_ids}


# -- Flower's own strategies: the NumPyClient API ------------------------------------------------
def numpy_client(model, data: ClientData, training: LocalTraining | None = None, seed: int = 0,
                 update: Callable = local_update):
    """An npgru model as a ``flwr.client.NumPyClient`` (``.to_client()`` for a ``client_fn``).

    Parameters travel as ``[p for p in model.params.values()]`` (the state-dict order) and the
    client returns its trained parameters (θ + Δ), so Flower's own strategies aggregate them.

    Parameters
    ----------
    model : Module
        The architecture; a copy is trained.
    data : ClientData
    training : LocalTraining, optional
        The local-training settings (Flower's strategies do not send npgru's).
    seed : int, default 0
        With the round number and the client id, seeds the local shuffling as in npgru's
        simulator. The round is ``config["server_round"]`` — 1 if the strategy does not send
        it; send it with ``on_fit_config_fn=lambda r: {"server_round": r}``.
    update : callable, default :func:`~npgru.fed.client.local_update`
    """
    flwr: Any = _import_flwr()
    model = clone_model(model)
    settings: LocalTraining = training or LocalTraining()

    def set_parameters(parameters) -> np.ndarray:
        if len(parameters) != len(model.params):
            raise ValueError(f"expected {len(model.params)} arrays, got {len(parameters)}")
        model.load_state_dict(dict(zip(model.params, parameters, strict=True)))
        return model.flat_params.copy()

    class Client(flwr.client.NumPyClient):
        def get_parameters(self, config):
            return [p.copy() for p in model.params.values()]

        def fit(self, parameters, config):
            theta = set_parameters(parameters)
            ins = FitIns(data.client_id, int(config.get("server_round", 1)), int(seed))
            res = run_fit(update, model, data, theta, ins, settings)
            if res.error is not None:  # Flower records a raising client as a failure
                raise RuntimeError(f"client {data.client_id}: {res.error}")
            model.flat_params[...] = theta + res.delta
            return self.get_parameters(config), res.num_examples, _scalars(res.metrics, "metric")

        def evaluate(self, parameters, config):
            res = evaluate_client(model, data, set_parameters(parameters))
            if res.error is not None:
                raise RuntimeError(f"client {data.client_id}: {res.error}")
            return float(res.metrics["loss"]), res.num_examples, _scalars(res.metrics, "metric")

    return Client()


def _import_flwr():
    try:
        import flwr
        import flwr.app
        import flwr.client
        import flwr.clientapp
        import flwr.serverapp
    except ImportError as e:
        raise ImportError(
            "npgru.fed.flower needs Flower: pip install npgru[flower] "
            "(or pip install 'flwr[simulation]>=1.20')"
        ) from e
    return flwr
