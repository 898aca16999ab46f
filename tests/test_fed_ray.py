"""The Ray executor gives the serial executor's global model bit for bit (local Ray, 2 CPUs)."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from npgru import fed
from npgru.datasets import ClientData

from ._fed_common import classification_data, faulty_update
from .conftest import require
from .test_fed_simulation import comparable, make_sim


@pytest.fixture(scope="module")
def ray():
    """One local Ray for the module (its start-up takes seconds); the executors reuse it."""
    ray = require("ray")
    # "local": a new instance even if this machine runs (or ran) another Ray cluster
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def ray_executor():
    from npgru.fed.ray_executor import RayExecutor

    return RayExecutor(workers=2)


@pytest.mark.parametrize("strategy", [fed.FedAvg(), fed.Scaffold()], ids=["fedavg", "scaffold"])
def test_ray_and_serial_executors_are_bit_identical(ray, strategy):
    kw = dict(dropout=0.4, stragglers=0.4, straggler_policy="partial", local_epochs=2)
    serial = make_sim(strategy, executor="serial", **kw)
    h_serial = serial.run()
    distributed = make_sim(strategy, executor=ray_executor(), **kw)
    h_ray = distributed.run()
    np.testing.assert_array_equal(serial.model_.flat_params, distributed.model_.flat_params)
    assert comparable(h_serial) == comparable(h_ray)  # evaluation results included
    assert ray.is_initialized()  # the executor did not shut down a Ray it did not start


def crashing_update(model, data, ins, training, marker=None):
    """Kills its worker process (a lost node, as far as Ray can tell): always for a client
    whose id ends in "crash", the first time only for one ending in "flaky"."""
    cid = ins.client_id
    if cid.endswith("crash") or (cid.endswith("flaky") and not marker.exists()):
        marker.touch()
        os._exit(1)
    return faulty_update(model, data, ins, training)


def test_lost_workers_are_retried_then_dropped_and_the_rest_is_exact(ray, monkeypatch, tmp_path):
    import npgru.fed.ray_executor

    monkeypatch.setattr(npgru.fed.ray_executor, "MAX_RETRIES", 1)  # each restart costs seconds
    base = classification_data(num_clients=4).clients
    clients = [ClientData(cid, c.x_train, c.y_train, c.x_test, c.y_test)
               for cid, c in zip(["c0", "c1raise", "c2crash", "c3flaky"], base, strict=True)]
    update = functools.partial(crashing_update, marker=tmp_path / "crashed")
    sim = make_sim(data=clients, clients_per_round=4, rounds=2, local_update=update,
                   executor=ray_executor(), eval_every=0)
    history = sim.run()
    for record in history:
        assert record["ok"] == ["c0", "c3flaky"]  # c3flaky: its task ran again after a restart
        assert record["dropped"]["c1raise"].startswith("raised RuntimeError: boom")
        assert record["dropped"]["c2crash"].startswith("Ray worker lost")
    # exactly the model that the good clients alone produce
    ref = make_sim(data=[clients[0], clients[3]], clients_per_round=2, rounds=2, eval_every=0)
    ref.run()
    np.testing.assert_array_equal(sim.model_.flat_params, ref.model_.flat_params)


def test_bad_settings():
    from npgru.fed.ray_executor import RayExecutor

    require("ray")
    with pytest.raises(ValueError, match="workers"):
        RayExecutor(workers=0).start(None, [], None, None)


def test_executor_named_ray_resolves_to_the_ray_executor(ray):
    from npgru.fed.executors import make_executor
    from npgru.fed.ray_executor import RayExecutor

    assert isinstance(make_executor("ray", 2), RayExecutor)


@pytest.mark.timeout(180, method="thread")
def test_a_client_stuck_inside_a_step_has_its_actor_killed_and_replaced(ray):
    from .test_faults import good_model, hanging_update, sim_of

    kinds = ["", "sleep", "deaf", ""]
    good_model(kinds)
    # generous: a replacement actor loads npgru and its compiled kernels before its first step
    sim = sim_of(kinds, hanging_update, time_budget=10.0, rounds=2, executor=ray_executor())
    history = sim.run()
    for record in history:
        assert record["ok"] == ["c0", "c3"], record["dropped"]
        for cid in ("c1sleep", "c2deaf"):
            assert record["dropped"][cid].startswith("timeout"), record["dropped"]
