"""Aggregation and server/client update rules against hand computations and the papers."""

from __future__ import annotations

import numpy as np
import pytest

import npgru
from npgru import fed
from npgru.datasets import ClientData

from ._fed_common import classification_data, classifier


def one_client(n: int = 24, seed: int = 0, dtype=np.float32) -> list[ClientData]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 5, 3)) + y[:, None, None]).astype(dtype)
    return [ClientData("only", x, y, x[:4], y[:4])]


def centralized_sgd(model, client: ClientData, lr: float, steps: int):
    """``steps`` full-batch SGD steps on the client's training data, outside the simulator."""
    m = type(model)(**model.config())
    m.flat_params[...] = model.flat_params
    opt = npgru.SGD(m, lr=lr)
    for _ in range(steps):
        m.loss_and_grad(client.x_train, client.y_train)
        opt.step()
    return m.flat_params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fedavg_one_client_one_step_is_a_centralized_sgd_step(dtype):
    clients, model = one_client(dtype=dtype), classifier(dtype=dtype)
    sim = fed.Simulation(model, clients, fed.FedAvg(), rounds=1, clients_per_round=1,
                         training=fed.LocalTraining(lr=0.3, batch_size=len(clients[0].x_train)),
                         eval_every=0)
    sim.run()
    np.testing.assert_array_equal(sim.model_.flat_params,
                                  centralized_sgd(model, clients[0], 0.3, 1))


def make_aggregate(strategy, deltas, counts):
    agg = strategy.begin_aggregate(1)
    for k, (d, n) in enumerate(zip(deltas, counts, strict=True)):
        agg.add(fed.FitRes(f"c{k}", np.asarray(d), n))
    return agg


@pytest.mark.parametrize("weighted,expected", [(True, [2.5, 3.5]), (False, [2.0, 3.0])])
def test_weighted_and_unweighted_mean_by_hand(weighted, expected):
    s = fed.FedAvg(server_lr=0.5, weighted=weighted)
    params = np.array([10.0, 20.0])
    s.initialize(params, 2)
    agg = make_aggregate(s, [[1.0, 2.0], [3.0, 4.0]], [1, 3])
    np.testing.assert_allclose(agg.delta.result(), expected)
    s.commit(1, params, agg)
    np.testing.assert_allclose(params, [10 + 0.5 * expected[0], 20 + 0.5 * expected[1]])


def fixed_delta_update(model, data, ins, training):
    """Client k returns the delta (k + 1)·[1, -1, 1, …] with n_k = its training size."""
    k = int(ins.client_id[1:])
    signs = (-1.0) ** np.arange(model.flat_params.size)
    return fed.FitRes(ins.client_id, ((k + 1) * signs).astype(model.flat_params.dtype),
                      data.num_train)


@pytest.mark.parametrize("weighted", [True, False])
def test_round_applies_the_hand_computed_mean(weighted):
    base = one_client(n=10)[0]
    sizes = [2, 3, 5]
    clients = [ClientData(f"c{k}", base.x_train[:n], base.y_train[:n], base.x_test, base.y_test)
               for k, n in enumerate(sizes)]
    model = classifier()
    sim = fed.Simulation(model, clients, fed.FedAvg(weighted=weighted), rounds=1,
                         clients_per_round=3, local_update=fixed_delta_update, eval_every=0)
    sim.run()
    scale = (1 * 2 + 2 * 3 + 3 * 5) / 10 if weighted else (1 + 2 + 3) / 3
    signs = (-1.0) ** np.arange(model.num_params)
    np.testing.assert_allclose(sim.model_.flat_params, model.flat_params + scale * signs,
                               rtol=1e-6)


# -- Reddi et al. 2021, Algorithm 2, transcribed coordinate by coordinate ---------------------
def paper_fedopt(rule, x0, deltas, eta, beta1, beta2, tau):
    x, m, v = list(x0), [0.0] * len(x0), [tau * tau] * len(x0)
    for delta in deltas:
        for i, d in enumerate(delta):
            m[i] = beta1 * m[i] + (1 - beta1) * d
            if rule == "adagrad":
                v[i] = v[i] + d * d
            elif rule == "yogi":
                v[i] = v[i] - (1 - beta2) * d * d * np.sign(v[i] - d * d)
            else:
                v[i] = beta2 * v[i] + (1 - beta2) * d * d
            x[i] = x[i] + eta * m[i] / (np.sqrt(v[i]) + tau)
    return np.array(x)


def paper_fedavgm(x0, deltas, eta, beta):
    x, v = list(x0), [0.0] * len(x0)
    for delta in deltas:
        for i, d in enumerate(delta):
            v[i] = beta * v[i] + d
            x[i] = x[i] + eta * v[i]
    return np.array(x)


def run_rounds(strategy, x0, deltas):
    params = np.array(x0)
    strategy.initialize(params, 1)
    for t, d in enumerate(deltas, start=1):
        strategy.commit(t, params, make_aggregate(strategy, [d], [7]))
    return params


@pytest.mark.parametrize("cls,rule", [(fed.FedAdam, "adam"), (fed.FedYogi, "yogi"),
                                      (fed.FedAdagrad, "adagrad")])
def test_fedopt_matches_the_paper(cls, rule):
    rng = np.random.default_rng(1)
    x0, deltas = rng.normal(size=6), rng.normal(size=(5, 6)) * 0.1
    kw = dict(server_lr=0.03, beta1=0.8, beta2=0.95, tau=1e-2)
    np.testing.assert_allclose(run_rounds(cls(**kw), x0, deltas),
                               paper_fedopt(rule, x0, deltas, 0.03, 0.8, 0.95, 1e-2), rtol=1e-12)


def test_fedavgm_matches_server_momentum():
    rng = np.random.default_rng(2)
    x0, deltas = rng.normal(size=6), rng.normal(size=(5, 6))
    got = run_rounds(fed.FedAvgM(server_lr=0.7, momentum=0.9), x0, deltas)
    np.testing.assert_allclose(got, paper_fedavgm(x0, deltas, 0.7, 0.9), rtol=1e-12)


def simulate(strategy, rounds=3, **kw):
    sim = fed.Simulation(classifier(), classification_data(), strategy, rounds=rounds,
                         clients_per_round=4, training=fed.LocalTraining(lr=0.2, batch_size=8),
                         eval_every=0, seed=3, **kw)
    sim.run()
    return sim


def test_fedprox_with_mu_zero_is_fedavg():
    np.testing.assert_array_equal(simulate(fed.FedProx(mu=0.0)).model_.flat_params,
                                  simulate(fed.FedAvg()).model_.flat_params)


def test_fedprox_term_pulls_towards_the_global_model():
    base = simulate(fed.FedAvg(), rounds=1).model_.flat_params
    prox = simulate(fed.FedProx(mu=5.0), rounds=1).model_.flat_params
    start = classifier().flat_params
    assert np.linalg.norm(prox - start) < np.linalg.norm(base - start)


def test_scaffold_with_one_client_is_plain_sgd():
    clients, model = one_client(dtype=np.float64), classifier(dtype=np.float64)
    n = len(clients[0].x_train)
    sim = fed.Simulation(model, clients, fed.Scaffold(), rounds=3, clients_per_round=1,
                         training=fed.LocalTraining(lr=0.2, batch_size=n, steps=4), eval_every=0)
    sim.run()
    np.testing.assert_allclose(sim.model_.flat_params,
                               centralized_sgd(model, clients[0], 0.2, 12), rtol=1e-10, atol=1e-12)
    # with one client the server variate is that client's own, kept across rounds
    c_i = sim.client_states_["only"]["c_i"]
    np.testing.assert_allclose(sim.strategy.state_dict()["c"], c_i, rtol=1e-12)
    assert np.abs(c_i).max() > 0


def test_scaffold_differs_from_fedavg_on_non_iid_clients():
    a = simulate(fed.Scaffold()).model_.flat_params
    b = simulate(fed.FedAvg()).model_.flat_params
    assert np.all(np.isfinite(a)) and not np.array_equal(a, b)


def test_strategy_state_round_trips_and_rejects_mismatches():
    s = fed.FedAdam()
    s.initialize(np.zeros(4), 1)
    state = s.state_dict()
    assert set(state) == {"m", "v"}
    s.load_state_dict(state)
    with pytest.raises(ValueError, match="needs"):
        s.load_state_dict({"m": state["m"]})
    with pytest.raises(ValueError, match="shape"):
        s.load_state_dict({"m": np.zeros(3), "v": np.zeros(3)})


@pytest.mark.parametrize("strategy,match", [(fed.FedAvg(server_lr=-1.0), "server_lr"),
                                            (fed.FedAdam(tau=0.0), "tau"),
                                            (fed.FedYogi(beta2=1.0), "beta2"),
                                            (fed.FedAvgM(momentum=-0.1), "momentum"),
                                            (fed.FedProx(mu=-1.0), "mu")])
def test_bad_strategy_settings_raise(strategy, match):
    with pytest.raises(ValueError, match=match):
        strategy.initialize(np.zeros(3), 1)
