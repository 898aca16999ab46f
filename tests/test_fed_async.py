"""FedBuff asynchronous aggregation: staleness weighting, records, determinism and resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from npgru import fed
from npgru.cli import main
from npgru.fed.checkpoint import load_checkpoint
from npgru.fed.client import FitRes

from ._fed_common import classification_data, classifier
from .test_fed_simulation import comparable

NUM_CLIENTS = 8


def unit_update(model, data, ins, training):
    """Every client sends a delta of ones (module level: it travels to worker processes)."""
    return FitRes(ins.client_id, np.ones(model.flat_params.size), data.num_train, {"loss": 1.0})


def simulate(rounds=4, **kw):
    settings = dict(rounds=rounds, clients_per_round=4, seed=1, eval_every=0,
                    training=fed.LocalTraining(lr=0.2, batch_size=16), async_buffer=2,
                    max_concurrency=4)
    settings.update(kw)
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), **settings)
    return sim, sim.run()


def test_each_update_applies_the_staleness_weighted_buffer():
    sim, history = simulate(rounds=6, async_buffer=1, max_concurrency=3, local_update=unit_update,
                            strategy=fed.FedAvg(weighted=False))
    taus = [r["staleness"]["mean"] for r in history]
    assert [r["staleness"]["max"] for r in history] == taus and max(taus) >= 1
    step = sum(1 / math.sqrt(1 + tau) for tau in taus)
    np.testing.assert_allclose(sim.model_.flat_params, sim.model.flat_params + step, rtol=1e-6)


def test_records_are_updates_on_the_simulated_clock():
    _, history = simulate(rounds=4)
    assert [r["round"] for r in history] == [1, 2, 3, 4]
    assert all(r["num_ok"] == 2 and r["status"] == "ok" for r in history)
    times = history.series("sim_time")
    assert times == sorted(times) and times[0] > 0
    assert history[0]["staleness"] == {"mean": 0.0, "max": 0}
    assert any(r["staleness"]["max"] > 0 for r in history)


def test_async_is_identical_across_executors_and_on_resume(tmp_path):
    kw = dict(rounds=5, device_profile="mobile", max_concurrency=5, async_buffer=2)
    serial, h_serial = simulate(**kw)
    process, h_process = simulate(executor="process", workers=2, **kw)
    np.testing.assert_array_equal(serial.model_.flat_params, process.model_.flat_params)
    assert comparable(h_serial) == comparable(h_process)
    simulate(**{**kw, "rounds": 2}, checkpoint_dir=str(tmp_path))
    saved = load_checkpoint(str(tmp_path / "checkpoint.npz"))["client_states"]
    assert sum(k.startswith("__fedbuff__/") for k in saved) >= 2  # counters, a client in flight
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), clients_per_round=4,
                             seed=1, eval_every=0, training=fed.LocalTraining(lr=0.2, batch_size=16),
                             checkpoint_dir=str(tmp_path), **kw)
    h_resumed = resumed.run(resume=True)
    np.testing.assert_array_equal(serial.model_.flat_params, resumed.model_.flat_params)
    assert comparable(h_resumed) == comparable(h_serial)
    assert not any(k.startswith("__fedbuff__") for k in resumed.client_states_)


@pytest.mark.parametrize("kw,error,name", [
    (dict(async_buffer=0), ValueError, "async_buffer"),
    (dict(async_buffer="2"), TypeError, "async_buffer"),
    (dict(async_buffer=9), ValueError, "async_buffer"),
    (dict(async_buffer=None, max_concurrency=2), ValueError, "max_concurrency"),
    (dict(max_concurrency=0), ValueError, "max_concurrency"),
    (dict(deadline=10.0), ValueError, "deadline"),
    (dict(sampling="poisson"), ValueError, "poisson"),
    (dict(min_clients=3), ValueError, "async_buffer"),
    (dict(strategy=fed.DPAggregate(fed.FedAvg(), fed.DifferentialPrivacy(1.0, 1.0))),
     ValueError, "DP"),
])
def test_bad_async_settings_are_refused_by_name(kw, error, name):
    settings = {"clients_per_round": 4, "async_buffer": 2, **kw}
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), **settings)
    with pytest.raises(error, match=name):
        sim.check()


def test_federate_async(tmp_path):
    out = tmp_path / "run"
    tiny = ["--max-clients", "3", "--min-chars", "30000", "--hidden-size", "8", "--seq-len", "20",
            "--quiet", "--batch-size", "16", "--rounds", "2", "--eval-every", "0",
            "--clients-per-round", "2"]
    assert main(["federate", *tiny, "--async-buffer", "1", "--max-concurrency", "2",
                 "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history] == [1, 2] and "staleness" in history[-1]
    assert main(["federate", *tiny, "--async-buffer", "0", "--out", str(out)]) == 2
