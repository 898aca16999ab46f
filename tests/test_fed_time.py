"""Simulated time: device profiles, the clock, deadlines, partial work and over-selection.

The clock's figures are recomputed here from the devices and the bytes moved; the runs are
identical across executors and on resume.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from npgru import fed
from npgru.cli import main
from npgru.fed.clock import SimulatedClock, first_finishers
from npgru.fed.devices import DeviceProfile, device_table, draw_profile, training_flops_per_example

from ._fed_common import classification_data, classifier

NUM_CLIENTS = 8
UNIFORM = DeviceProfile(2e9, 20e6, 5e6, 0.05)


def simulate(rounds=2, **kw):
    settings = dict(rounds=rounds, clients_per_round=4, seed=3, eval_every=0,
                    training=fed.LocalTraining(lr=0.2, batch_size=16))
    settings.update(kw)
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), **settings)
    return sim, sim.run()


def client_seconds(sim, cid, work=1.0, up_bytes=None, profile=UNIFORM):
    """A client's download + compute + upload, from first principles."""
    client = next(c for c in sim.data.clients if c.client_id == cid)
    params = sim.model_.flat_params
    flops = 6 * params.size * client.x_train.shape[1] * client.num_train * work
    up = 8 * params.size if up_bytes is None else up_bytes  # a float64 delta
    return (2 * profile.latency_s + 8 * params.nbytes / profile.downlink_bps
            + flops / profile.flops + 8 * up / profile.uplink_bps)


def test_uniform_population_and_mobile_draws_from_seed_and_client_id():
    assert draw_profile("uniform", 0, "a") == draw_profile("uniform", 5, "b") == UNIFORM
    a = device_table("mobile", 1, ["x", "y", "z"])
    b = device_table("mobile", 1, ["z", "x"])  # other clients change nothing
    assert a["x"] == b["x"] and a["z"] == b["z"] and a["x"] != a["y"]
    assert draw_profile("mobile", 2, "x") != a["x"]


def test_mobile_spread_is_the_documented_one():
    profiles = device_table("mobile", 0, [f"c{i}" for i in range(4000)]).values()
    flops = np.array([p.flops for p in profiles])
    down = np.array([p.downlink_bps for p in profiles])
    hours = np.array([p.online_hours for p in profiles])
    # median 2 GFLOP/s, 10th-90th percentile 0.63-6.3; downlink median 20 Mbit/s, 5.5-72
    np.testing.assert_allclose(np.percentile(flops, [10, 50, 90]), [0.63e9, 2e9, 6.3e9], rtol=0.1)
    np.testing.assert_allclose(np.percentile(down, [10, 50, 90]), [5.5e6, 20e6, 72e6], rtol=0.1)
    assert 4 <= hours.min() and hours.max() <= 16


def test_online_window_wraps_around_midnight():
    p = DeviceProfile(1e9, 1e6, 1e6, 0.0, online_start_h=22, online_hours=4)
    assert p.online_for(23 * 3600) == 3 * 3600  # on until 02:00
    assert p.online_for(24 * 3600 + 3600) == 3600
    assert p.online_for(12 * 3600) == 0
    assert UNIFORM.online_for(1e9) == math.inf


def test_round_lasts_as_long_as_its_slowest_counted_client():
    sim, history = simulate()
    previous = 0.0
    for record in history:
        slowest = max(client_seconds(sim, cid) for cid in record["ok"])
        assert record["sim_time"] == pytest.approx(previous + slowest, rel=1e-12)
        previous = record["sim_time"]


def test_compressed_uploads_shorten_the_round():
    plain, h_plain = simulate(rounds=1)
    _, h_q8 = simulate(rounds=1, strategy=fed.Compress(fed.FedAvg(), "q8"))
    size = plain.model_.flat_params.size
    sent = h_q8[0]["bytes_up"] // h_q8[0]["num_ok"]
    assert sent == size + 8  # a byte a coordinate and the scale
    slowest = max(client_seconds(plain, c, up_bytes=sent) for c in h_q8[0]["ok"])
    assert h_q8[0]["sim_time"] == pytest.approx(slowest, rel=1e-12)
    assert h_q8[0]["sim_time"] < h_plain[0]["sim_time"]


def test_deadline_drops_the_slow_or_keeps_their_partial_work():
    sim, _ = simulate(rounds=1)
    times = sorted(client_seconds(sim, c.client_id) for c in sim.data.clients)
    deadline = (times[1] + times[-2]) / 2
    _, dropped = simulate(rounds=2, deadline=deadline)
    _, partial = simulate(rounds=2, deadline=deadline, straggler_policy="partial")
    late = [cid for r in dropped for cid, why in r["dropped"].items()
            if why.startswith("deadline:")]
    assert late
    for r in dropped:
        assert r["sim_time"] - (r["round"] - 1 and dropped[r["round"] - 2]["sim_time"]) <= deadline
    assert sum(len(r["partial"]) for r in partial) == len(late)
    for r in partial:
        assert not r["dropped"] and r["num_ok"] == 4
        for cid, work in r["partial"].items():
            assert 0 < work < 1  # the work that fits with a full float64 upload
            assert client_seconds(sim, cid, work) == pytest.approx(deadline, rel=1e-9)


def test_over_selection_counts_the_first_finishers():
    ids = [c.client_id for c in classification_data(NUM_CLIENTS).clients]
    table = {c: dataclasses.replace(p, online_hours=24.0)  # mobile speeds, always online
             for c, p in device_table("mobile", 3, ids).items()}
    sim, history = simulate(rounds=2, device_profile=table, clients_per_round=3, over_select=2.0)
    for r in history:
        assert r["num_sampled"] == 6 and r["num_ok"] == 3
        finish = {c: client_seconds(sim, c, profile=table[c]) for c in r["sampled"]}
        assert set(r["ok"]) == first_finishers(list(finish.items()), 3)
        assert all(why.startswith("over-selection") for why in r["dropped"].values())


def test_poisson_rounds_drop_the_clients_offline_at_their_start():
    # Poisson sampling (as DP's accountant needs) draws from the whole population
    night = DeviceProfile(2e9, 20e6, 5e6, 0.05, online_start_h=6, online_hours=1)
    table = {c.client_id: (night if i % 2 else UNIFORM)
             for i, c in enumerate(classification_data(NUM_CLIENTS).clients)}
    _, history = simulate(rounds=1, device_profile=table, sampling="poisson")
    offline = history[0]["dropped"]
    assert offline and all(table[c] is night for c in offline)
    assert all(why.startswith("offline:") for why in offline.values())
    # nobody online and nobody trained: the clock moves on to the first device coming online
    for deadline in (None, 5.0):
        _, history = simulate(rounds=1, device_profile={c: night for c in table},
                              deadline=deadline, sampling="poisson")
        assert history[0]["status"] == "failed" and history[0]["sim_time"] == 6 * 3600


def test_fixed_rounds_sample_among_the_clients_online_at_their_start():
    night = DeviceProfile(2e9, 20e6, 5e6, 0.05, online_start_h=6, online_hours=1)
    table = {c.client_id: (night if i % 2 else UNIFORM)
             for i, c in enumerate(classification_data(NUM_CLIENTS).clients)}
    _, history = simulate(rounds=2, device_profile=table)
    for r in history:
        assert r["num_ok"] == 4 and not r["dropped"]
        assert all(table[c] is UNIFORM for c in r["sampled"])
    # nobody online: the clock waits for the first to come online, then the round runs
    sim, history = simulate(rounds=1, device_profile={c: night for c in table})
    slowest = max(client_seconds(sim, c) for c in history[0]["ok"])
    assert history[0]["status"] == "ok" and history[0]["num_ok"] == 4
    assert history[0]["sim_time"] == pytest.approx(6 * 3600 + slowest, rel=1e-12)


def test_mobile_fixed_rounds_select_only_online_clients(tmp_path):
    # mobile devices online 0.36 s a day (about three rounds), three at 00:00, three at 03:00,
    # two at 06:00: rounds wait for a window, and clients go offline mid-round
    ids = [c.client_id for c in classification_data(NUM_CLIENTS).clients]
    table = {c: dataclasses.replace(p, online_start_h=float(i // 3 * 3), online_hours=1e-4)
             for i, (c, p) in enumerate(device_table("mobile", 3, ids).items())}
    kw = dict(device_profile=table, clients_per_round=2, rounds=8)
    serial, history = simulate(**kw)
    start = 0.0
    for r in history:
        start = min(p.next_online(start) for p in table.values())
        online = [c for c in ids if table[c].online_for(start) > 0]
        assert set(r["sampled"]) <= set(online) and r["num_sampled"] == min(2, len(online))
        assert not any("offline at simulated hour" in why for why in r["dropped"].values())
        start = r["sim_time"]
    # a round whose clients all go offline lasts until they do; the next one waits for 03:00
    assert any("goes offline" in why for r in history for why in r["dropped"].values())
    assert 3 * 3600 < history[-1]["sim_time"] < 6 * 3600
    process, h_process = simulate(executor="process", workers=2, **kw)
    simulate(**{**kw, "rounds": 3}, checkpoint_dir=str(tmp_path))
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), seed=3,
                             eval_every=0, training=fed.LocalTraining(lr=0.2, batch_size=16),
                             checkpoint_dir=str(tmp_path), **kw)
    for other in (h_process, resumed.run(resume=True)):
        assert other.series("sampled") == history.series("sampled")
        assert other.series("dropped") == history.series("dropped")
        assert other.series("sim_time") == history.series("sim_time")
    np.testing.assert_array_equal(serial.model_.flat_params, process.model_.flat_params)
    np.testing.assert_array_equal(serial.model_.flat_params, resumed.model_.flat_params)


def test_clock_plans_partial_work_exactly():
    clock = SimulatedClock({"a": UNIFORM}, {"a": 1e9}, {"a": 10}, deadline=5.0, partial=True)
    reason, work = clock.plan("a", 0.0, 1.0, 0, 0)  # 5 s of compute, 0.1 s of latency
    assert reason is None and work == pytest.approx(4.9 / 5.0)
    clock.partial = False
    reason, _ = clock.plan("a", 0.0, 1.0, 0, 0)
    assert reason.startswith("deadline: needs 5.0")  # download and compute already miss
    assert training_flops_per_example(100, 7) == 4200


def test_time_is_identical_across_executors_and_on_resume(tmp_path):
    kw = dict(device_profile="mobile", deadline=400.0, straggler_policy="partial",
              clients_per_round=3, over_select=1.5, rounds=4)
    serial, h_serial = simulate(**kw)
    process, h_process = simulate(executor="process", workers=2, **kw)
    np.testing.assert_array_equal(serial.model_.flat_params, process.model_.flat_params)
    assert h_serial.series("sim_time") == h_process.series("sim_time")
    assert [r["dropped"] for r in h_serial] == [r["dropped"] for r in h_process]
    simulate(**{**kw, "rounds": 2}, checkpoint_dir=str(tmp_path))
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), seed=3,
                             eval_every=0, training=fed.LocalTraining(lr=0.2, batch_size=16),
                             checkpoint_dir=str(tmp_path), **kw)
    h_resumed = resumed.run(resume=True)
    assert h_resumed.series("sim_time") == h_serial.series("sim_time")
    np.testing.assert_array_equal(serial.model_.flat_params, resumed.model_.flat_params)
    other = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), seed=3,
                           eval_every=0, training=fed.LocalTraining(lr=0.2, batch_size=16),
                           checkpoint_dir=str(tmp_path), **{**kw, "deadline": 500.0})
    with pytest.raises(ValueError, match="deadline"):
        other.run(resume=True)


@pytest.mark.parametrize("kw,error,name", [
    (dict(deadline=-1.0), ValueError, "deadline"),
    (dict(deadline="60"), TypeError, "deadline"),
    (dict(over_select=0.5), ValueError, "over_select"),
    (dict(over_select="2"), TypeError, "over_select"),
    (dict(over_select=2.0, sampling="poisson"), ValueError, "over_select"),
    (dict(device_profile="fast"), ValueError, "device_profile"),
    (dict(device_profile=3), TypeError, "device_profile"),
    (dict(device_profile={"nobody": UNIFORM}), ValueError, "device_profile"),
])
def test_bad_time_settings_are_refused_by_name(kw, error, name):
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), clients_per_round=4, **kw)
    with pytest.raises(error, match=name):
        sim.check()


@pytest.mark.parametrize("kw,error,name", [
    (dict(flops=0.0), ValueError, "flops"), (dict(uplink_bps="fast"), TypeError, "uplink_bps"),
    (dict(latency_s=-0.1), ValueError, "latency_s"),
    (dict(online_hours=0.0), ValueError, "online_hours"),
    (dict(online_start_h=24.0), ValueError, "online_start_h"),
])
def test_bad_device_profiles_are_refused_by_name(kw, error, name):
    with pytest.raises(error, match=name):
        DeviceProfile(**{"flops": 1e9, "downlink_bps": 1e6, "uplink_bps": 1e6, "latency_s": 0.0,
                         **kw})


def test_federate_flags(tmp_path):
    tiny = ["--max-clients", "3", "--min-chars", "30000", "--hidden-size", "8", "--seq-len", "20",
            "--quiet", "--batch-size", "16", "--rounds", "1", "--eval-every", "0"]
    out = tmp_path / "run"
    assert main(["federate", *tiny, "--clients-per-round", "1", "--device-profile", "uniform",
                 "--over-select", "2", "--deadline", "1e6", "--straggler-policy", "partial",
                 "--out", str(out)]) == 0
    record = json.loads((out / "history.json").read_text())[0]
    assert record["num_sampled"] == 2 and record["num_ok"] == 1 and record["sim_time"] > 0
    for bad in (["--deadline", "-5"], ["--over-select", "0.5"],
                ["--over-select", "2", "--sampling", "poisson"]):
        assert main(["federate", *tiny, *bad, "--out", str(out)]) == 2
