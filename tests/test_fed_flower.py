"""The Flower adapter: a real flwr simulation gives npgru's simulator's model (3 clients, 2 rounds)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from npgru import fed
from npgru.fed.client import ClientHook, FitIns, LocalTraining

from ._fed_common import classification_data, classifier
from .conftest import require
from .test_fed_simulation import comparable

# Flower reads this when it is imported: no usage reports from test runs
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

TRAINING = LocalTraining(lr=0.2, batch_size=8)
SETTINGS = dict(rounds=2, clients_per_round=3, training=TRAINING, seed=7)
BACKEND = {"init_args": {"address": "local", "num_cpus": 2, "include_dashboard": False},
           "client_resources": {"num_cpus": 1}}


@pytest.fixture(scope="module")
def flwr():
    return require("flwr")


@pytest.fixture(scope="module")
def data():
    return classification_data(num_clients=3)


def partition(data):
    """A client_app loader: the simulated node's partition id picks its client."""
    return lambda context: data.clients[int(context.node_config["partition-id"])]


def run_flower(server_app, client_app):
    from flwr.simulation import run_simulation

    run_simulation(server_app, client_app, num_supernodes=3, backend_config=BACKEND)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_flower_run_equals_the_npgru_simulation(flwr, data):
    """Same data, settings and seed: the global model is the same bit for bit."""
    from npgru.fed.flower import FlowerServer, client_app

    model = classifier()
    test_data = data.pooled("test")
    server = FlowerServer(model, fed.FedAvg(), client_ids=[c.client_id for c in data.clients],
                          test_data=test_data, **SETTINGS)
    run_flower(server.server_app(), client_app(model, partition(data)))
    reference = fed.Simulation(model, data, fed.FedAvg(), test_data=test_data,
                               federated_eval=False, **SETTINGS)
    reference.run()
    np.testing.assert_array_equal(server.simulation_.model_.flat_params,
                                  reference.model_.flat_params)
    # sim_time differs: the Flower server cannot time training on data it never sees
    def untimed(history):
        return [{k: v for k, v in r.items() if k != "sim_time"} for r in comparable(history)]

    assert untimed(server.simulation_.history_) == untimed(reference.history_)
    assert [r["num_ok"] for r in reference.history_] == [3, 3]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_numpy_client_under_flowers_fedavg(flwr, data):
    """Flower's own FedAvg drives npgru clients.

    Close to npgru's FedAvg but not bit-identical, by design of Flower's aggregation: it
    averages the client *models* in their float32 precision and in the order replies arrive,
    while npgru sums float64 deltas in sampling order and rounds once.
    """
    from flwr.clientapp import ClientApp
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg

    from npgru.fed.flower import numpy_client

    model = classifier()
    training = TRAINING
    rounds: dict[int, list[np.ndarray]] = {}

    def keep(server_round, arrays, config):  # Flower calls it with each round's global model
        rounds[server_round] = arrays

    def server_fn(context):
        strategy = FedAvg(min_fit_clients=3, min_available_clients=3, fraction_evaluate=0.0,
                          initial_parameters=flwr.common.ndarrays_to_parameters(
                              list(model.params.values())),
                          on_fit_config_fn=lambda r: {"server_round": r}, evaluate_fn=keep)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=2))

    def client_fn(context):
        client = data.clients[int(context.node_config["partition-id"])]
        return numpy_client(model, client, training, seed=SETTINGS["seed"]).to_client()

    run_flower(ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn))
    reference = fed.Simulation(model, data, fed.FedAvg(), eval_every=0, **SETTINGS)
    reference.run()
    got = np.concatenate([a.ravel() for a in rounds[2]])
    # measured: at most one float32 ulp apart (6e-8), in about half of the entries
    np.testing.assert_allclose(got, reference.model_.flat_params, rtol=0, atol=1e-6)


# -- what travels in a message, without a simulation --------------------------------------------
class NotNpgru(ClientHook):
    pass


@pytest.mark.parametrize("strategy", [fed.FedProx(mu=0.3), fed.Scaffold()],
                         ids=["fedprox", "scaffold"])
def test_instructions_and_hooks_travel_as_plain_data(flwr, strategy):
    from npgru.fed.flower import decode_fit_ins, encode_fit_ins

    params = np.arange(5, dtype=np.float32)
    strategy.initialize(params, 4)
    config = strategy.configure_fit(3)
    ins = FitIns("c1", 3, 11, config.hooks, config.arrays, {"c_i": np.ones(5)}, 0.5)
    training = LocalTraining(optimizer="adam", lr=0.01, optimizer_kwargs={"betas1": 0.8},
                             epochs={"c1": 3}, clip_norm=2.0)
    got_params, got, got_training = decode_fit_ins(encode_fit_ins(flwr, params, ins, training))
    np.testing.assert_array_equal(got_params, params)
    assert (got.client_id, got.server_round, got.seed, got.work_fraction) == ("c1", 3, 11, 0.5)
    assert [type(h) for h in got.hooks] == [type(h) for h in ins.hooks]
    assert [vars(h) for h in got.hooks] == [vars(h) for h in ins.hooks]
    assert got.arrays.keys() == ins.arrays.keys() and got.state.keys() == ins.state.keys()
    assert got_training == LocalTraining(optimizer="adam", lr=0.01,
                                         optimizer_kwargs={"betas1": 0.8}, epochs=3,
                                         clip_norm=2.0)


def test_only_npgru_hooks_are_rebuilt(flwr):
    from npgru.fed.flower import decode_fit_ins, encode_fit_ins

    ins = FitIns("c1", 1, 0, (NotNpgru(),))
    content = encode_fit_ins(flwr, np.zeros(2, np.float32), ins, LocalTraining())
    with pytest.raises(ValueError, match="not an npgru class"):
        decode_fit_ins(content)
    with pytest.raises(TypeError, match="callable optimizer"):
        encode_fit_ins(flwr, np.zeros(2, np.float32), ins, LocalTraining(optimizer=lambda m: m))
