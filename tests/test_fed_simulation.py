"""The round loop: determinism across executors, faults, evaluation, history, exact resume."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import npgru
from npgru import fed
from npgru.datasets import ClientData
from npgru.fed.checkpoint import load_checkpoint
from npgru.fed.simulation import LEGACY_TRAINING

from ._fed_common import classification_data, classifier, faulty_update
from .conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def comparable(history):
    """History records without what is measured rather than computed (times)."""
    out = []
    for r in history:
        r = {k: v for k, v in r.items() if k not in ("wall_time", "eval_s")}
        out.append(r)
    return out


def make_sim(strategy=None, data=None, **kw):
    """A small simulation; the training keywords (``lr=``, ``local_epochs=``, …) go into its
    ``LocalTraining`` under their field names."""
    settings = dict(rounds=3, clients_per_round=4, lr=0.2, batch_size=8, seed=7)
    settings.update(kw)
    if "training" not in settings:
        settings["training"] = fed.LocalTraining(**{
            LEGACY_TRAINING[k]: settings.pop(k) for k in list(settings) if k in LEGACY_TRAINING})
    return fed.Simulation(settings.pop("model", classifier(dropout=0.2)),
                          data if data is not None else classification_data(),
                          strategy if strategy is not None else fed.FedAvg(), **settings)


@pytest.mark.parametrize("strategy", [fed.FedAvg(), fed.Scaffold(), fed.FedAdam()],
                         ids=["fedavg", "scaffold", "fedadam"])
def test_serial_and_process_executors_are_bit_identical(strategy):
    kw = dict(dropout=0.4, stragglers=0.4, straggler_policy="partial", local_epochs=2)
    serial = make_sim(strategy, executor="serial", **kw)
    h_serial = serial.run()
    process = make_sim(strategy, executor="process", workers=2, **kw)
    h_process = process.run()
    np.testing.assert_array_equal(serial.model_.flat_params, process.model_.flat_params)
    assert comparable(h_serial) == comparable(h_process)
    assert any(r["dropped"] for r in h_serial)  # the system faults did happen


# Shared with the forked workers: how many clients have started, and whether all of them have.
_started = None
_all_started = None


def waiting_update(model, data, ins, training):
    """The first client to start waits until every client of the round has started."""
    with _started.get_lock():
        _started.value += 1
        first, everyone = _started.value == 1, _started.value == 10
    if everyone:
        _all_started.set()
    if first and not _all_started.wait(30):
        raise RuntimeError("the clients behind this one were held back while it ran")
    return fed.local_update(model, data, ins, training)


@pytest.mark.timeout(120, method="thread")
def test_a_slow_client_does_not_hold_back_the_clients_behind_it():
    # With one result slot per task in flight (the old 2 × workers), the tasks queued behind a
    # slow client wait for it: here that is a deadlock broken only by the 30 s wait failing.
    global _started, _all_started
    ctx = multiprocessing.get_context("fork")
    _started, _all_started = ctx.Value("i", 0), ctx.Event()
    sim = make_sim(data=classification_data(num_clients=10), clients_per_round=10, rounds=1,
                   executor="process", workers=2, local_update=waiting_update)
    (record,) = sim.run()
    assert not record["dropped"] and len(record["ok"]) == 10
    assert fed.executors.num_slots(2, sim.model_.flat_params.size) == 32
    assert fed.executors.num_slots(2, 10**9) == 4  # a huge model keeps two slots per worker


def test_same_seed_same_model_other_seed_other_model():
    a, b, c = make_sim(seed=1), make_sim(seed=1), make_sim(seed=2)
    for s in (a, b, c):
        s.run()
    np.testing.assert_array_equal(a.model_.flat_params, b.model_.flat_params)
    assert not np.array_equal(a.model_.flat_params, c.model_.flat_params)


def test_the_initial_model_is_not_modified():
    model = classifier()
    before = model.flat_params.copy()
    make_sim(model=model).run()
    np.testing.assert_array_equal(model.flat_params, before)


def test_history_records_and_json(tmp_path):
    sim = make_sim(rounds=2, clients_per_round=0.5)
    history = sim.run()
    assert len(history) == 2 and history[0]["round"] == 1
    r = history[-1]
    assert r["status"] == "ok" and r["num_sampled"] == 4 and r["num_ok"] == 4
    assert r["bytes_down"] == 4 * sim.model_.flat_params.nbytes
    assert r["bytes_up"] == 4 * sim.model_.num_params * 8
    for key in ("train_loss", "test_loss", "test_accuracy", "fed_loss", "fed_accuracy",
                "fed_accuracy_worst10", "fed_loss_worst10"):
        assert np.isfinite(r[key]), key
    assert r["fed_accuracy_worst10"] <= r["fed_accuracy"]
    assert len(r["fed_clients"]) == 8
    again = fed.History.from_json(history.to_json())
    assert again.records == json.loads(json.dumps(history.records))
    path = tmp_path / "history.json"
    history.to_json(str(path))
    assert fed.History.from_json(path.read_text()).records == again.records
    assert history.series("round") == [1, 2]


def test_training_reduces_the_loss():
    history = make_sim(rounds=8, clients_per_round=8, local_epochs=2).run()
    assert history[-1]["test_loss"] < 0.8 * history[0]["test_loss"]


def test_per_client_step_budgets_are_used():
    ids = [c.client_id for c in classification_data().clients]
    steps = {ids[0]: 1, ids[1]: 5}
    sim = make_sim(local_steps=steps, clients_per_round=8, rounds=1, eval_every=0,
                   local_update=recording_update)
    sim.run()
    assert recorded_steps(sim)[ids[0]] == 1 and recorded_steps(sim)[ids[1]] == 5


def recording_update(model, data, ins, training):
    res = fed.local_update(model, data, ins, training)
    res.state = {"steps": np.full(model.num_params, res.metrics["steps"], np.float64)}
    return res


def recorded_steps(sim):
    return {cid: int(s["steps"][0]) for cid, s in sim.client_states_.items()}


# -- faults -----------------------------------------------------------------------------------
def faulty_clients(kinds):
    base = classification_data(num_clients=len(kinds)).clients
    return [ClientData(f"c{k}{kind}", c.x_train, c.y_train, c.x_test, c.y_test)
            for k, (kind, c) in enumerate(zip(kinds, base, strict=True))]


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_bad_clients_are_dropped_and_the_model_is_not_corrupted(executor):
    clients = faulty_clients(["", "raise", "nan", "wrong", "", "impostor"])
    good = [c for c in clients if c.client_id in ("c0", "c4")]
    sim = make_sim(data=clients, clients_per_round=6, local_update=faulty_update,
                   executor=executor, workers=2, rounds=2)
    history = sim.run()
    dropped = history[0]["dropped"]
    assert dropped["c1raise"].startswith("raised RuntimeError: boom")
    assert dropped["c2nan"].startswith("non-finite delta")
    assert dropped["c3wrong"].startswith("wrong-size delta")
    assert dropped["c5impostor"].startswith("invalid result")
    assert history[0]["ok"] == ["c0", "c4"] and history[0]["status"] == "ok"
    # exactly the model that the good clients alone produce
    ref = make_sim(data=good, clients_per_round=2, rounds=2)
    ref.run()
    np.testing.assert_array_equal(sim.model_.flat_params, ref.model_.flat_params)


def test_a_client_over_its_time_budget_is_dropped():
    clients = faulty_clients(["", "slow"])
    make_sim(data=clients, rounds=1, clients_per_round=2).run()  # warm-up: JIT compilation
    sim = make_sim(data=clients, rounds=1, clients_per_round=2, local_update=faulty_update,
                   time_budget=0.25)
    record = sim.run()[0]
    assert record["ok"] == ["c0"] and record["dropped"]["c1slow"].startswith("timeout")


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_result_that_cannot_cross_processes_is_dropped_by_every_executor(executor):
    sim = make_sim(data=faulty_clients(["", "unpicklable"]), clients_per_round=2, rounds=1,
                   local_update=faulty_update, executor=executor, workers=2)
    record = sim.run()[0]
    assert record["ok"] == ["c0"]
    assert record["dropped"]["c1unpicklable"] == (
        "invalid metric 'callback': expected a real number, got function")


def test_a_worker_that_dies_costs_only_its_client():
    clients = faulty_clients(["", "crash", "", ""])
    sim = make_sim(data=clients, clients_per_round=4, rounds=2, local_update=faulty_update,
                   executor="process", workers=2)
    history = sim.run()
    for record in history:
        assert record["status"] == "ok" and record["ok"] == ["c0", "c2", "c3"]
        assert "died" in record["dropped"]["c1crash"]
    ref = make_sim(data=[clients[0], clients[2], clients[3]], clients_per_round=3, rounds=2)
    ref.run()
    np.testing.assert_array_equal(sim.model_.flat_params, ref.model_.flat_params)


def test_a_client_whose_evaluation_fails_is_recorded():
    clients = faulty_clients(["", ""])
    clients[1].y_test = clients[1].y_test + 10  # class ids out of range
    record = make_sim(data=clients, rounds=1, clients_per_round=2,
                      test_data=(clients[0].x_test, clients[0].y_test)).run()[0]
    assert list(record["fed_clients"]) == ["c0"]
    assert record["fed_errors"]["c1"].startswith("raised ValueError")


def test_too_few_valid_updates_leave_model_and_state_unchanged():
    clients = faulty_clients(["", "raise", "nan"])
    strategy = fed.FedAvgM(momentum=0.9)
    sim = make_sim(strategy, data=clients, clients_per_round=3, min_clients=2,
                   local_update=faulty_update, rounds=2)
    history = sim.run()
    assert [r["status"] for r in history] == ["failed", "failed"]
    assert "fewer than min_clients=2" in history[0]["failure"]
    np.testing.assert_array_equal(sim.model_.flat_params, classifier(dropout=0.2).flat_params)
    assert not strategy.state_dict()["momentum"].any()


def test_dropouts_and_stragglers_are_recorded():
    history = make_sim(dropout=0.4, stragglers=0.4, clients_per_round=8, rounds=4).run()
    reasons = [reason for r in history for reason in r["dropped"].values()]
    assert any(x.startswith("dropout") for x in reasons)
    assert any(x.startswith("straggler") for x in reasons)
    partial = make_sim(stragglers=0.5, straggler_policy="partial", clients_per_round=8).run()
    fractions = [f for r in partial for f in r["partial"].values()]
    assert fractions and all(0 <= f < 1 for f in fractions)
    assert all(not r["dropped"] for r in partial)
    for r in history:
        assert r["num_ok"] + len(r["dropped"]) == r["num_sampled"]
        assert sorted(r["ok"] + list(r["dropped"])) == sorted(r["sampled"])


def test_a_non_finite_aggregate_is_discarded():
    sim = make_sim(fed.FedAvg(server_lr=1e308), rounds=1, eval_every=0)
    history = sim.run()
    assert history[0]["status"] == "failed" and "non-finite" in history[0]["failure"]
    np.testing.assert_array_equal(sim.model_.flat_params, classifier(dropout=0.2).flat_params)


@pytest.mark.parametrize("kw,match", [
    (dict(clients_per_round=0), "clients_per_round"),
    (dict(clients_per_round=1.5), "clients_per_round"),
    (dict(dropout=1.0), "dropout"),
    (dict(executor="gpu"), "executor"),
    (dict(rounds=0), "rounds"),
    (dict(straggler_policy="wait"), "straggler_policy"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(local_epochs=0), "training.epochs"),
    (dict(local_steps={"client_0": 0}), "training.steps"),
])
def test_bad_settings_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        make_sim(**kw).run()


def test_duplicate_client_ids_are_refused():
    c = classification_data().clients[0]
    with pytest.raises(ValueError, match="unique"):
        make_sim(data=[c, c]).run()


def test_a_client_with_mismatched_arrays_is_refused_up_front():
    c = classification_data().clients[0]
    bad = ClientData("bad", c.x_train, c.y_train[:-1], c.x_test, c.y_test)
    with pytest.raises(ValueError, match="'bad'.*same number of examples"):
        make_sim(data=[c, bad]).run()


# -- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy_cls", [fed.FedAdam, fed.Scaffold])
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, strategy_cls):
    full = make_sim(strategy_cls(), rounds=4, dropout=0.2)
    full.run()
    part = make_sim(strategy_cls(), rounds=2, dropout=0.2, checkpoint_dir=str(tmp_path))
    part.run()
    resumed = make_sim(strategy_cls(), rounds=4, dropout=0.2, checkpoint_dir=str(tmp_path))
    history = resumed.run(resume=True)
    np.testing.assert_array_equal(resumed.model_.flat_params, full.model_.flat_params)
    assert comparable(history) == comparable(full.history_)
    for name, value in full.strategy.state_dict().items():
        np.testing.assert_array_equal(resumed.strategy.state_dict()[name], value)
    assert [f for f in os.listdir(tmp_path) if f != "checkpoint.npz"] == []


@pytest.mark.parametrize("change", [dict(seed=99), dict(lr=0.3), dict(dropout=0.1)])
def test_resume_refuses_a_different_simulation(tmp_path, change):
    make_sim(rounds=1, checkpoint_dir=str(tmp_path)).run()
    with pytest.raises(ValueError, match=list(change)[0]):
        make_sim(rounds=2, checkpoint_dir=str(tmp_path), **change).run(resume=True)


def test_resume_needs_a_checkpoint_dir():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        make_sim().run(resume=True)


def test_checkpoint_is_plain_npz(tmp_path):
    make_sim(fed.Scaffold(), rounds=2, checkpoint_dir=str(tmp_path)).run()
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.npz"))  # allow_pickle=False inside
    assert ckpt["round"] == 2 and len(ckpt["history"]) == 2
    assert set(ckpt["strategy_state"]) == {"c"} and ckpt["client_states"]
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="as an npgru federated checkpoint"):
        load_checkpoint(str(tmp_path / "bad.npz"))


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {root!r})
from npgru import fed
from tests._fed_common import classification_data, classifier

def die(record):
    if record["round"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)

sim = fed.Simulation(classifier(dropout=0.2), classification_data(), fed.FedYogi(), rounds=5,
                     clients_per_round=4, lr=0.2, batch_size=8, seed=7, dropout=0.2,
                     executor="process", workers=2, checkpoint_dir={ckpt!r}, checkpoint_every=2)
sim.run(callback=die)
"""


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    script = KILLED_RUN.format(root=ROOT, ckpt=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(str(tmp_path / "checkpoint.npz"))["round"] == 2
    settings = dict(rounds=5, dropout=0.2)
    resumed = make_sim(fed.FedYogi(), checkpoint_dir=str(tmp_path), checkpoint_every=2,
                       **settings)
    resumed.run(resume=True)
    full = make_sim(fed.FedYogi(), **settings)
    full.run()
    np.testing.assert_array_equal(resumed.model_.flat_params, full.model_.flat_params)
    assert comparable(resumed.history_) == comparable(full.history_)


# -- the executor interface and memory ----------------------------------------------------------
class ReversedExecutor(fed.SerialExecutor):
    """Runs a round's clients last to first, as a parallel executor might finish them."""

    def fit(self, params, tasks):
        results = list(super().fit(params, list(tasks)[::-1]))
        yield from results[::-1]


def test_a_custom_executor_plugs_in_and_order_of_work_does_not_matter():
    ref = make_sim(fed.FedAdam(), dropout=0.2)
    ref.run()
    custom = make_sim(fed.FedAdam(), dropout=0.2, executor=ReversedExecutor())
    custom.run()
    np.testing.assert_array_equal(custom.model_.flat_params, ref.model_.flat_params)


def fresh_delta_update(model, data, ins, training):
    """A model-sized delta allocated per client, as real clients send."""
    return fed.FitRes(ins.client_id, np.full(model.num_params, 1e-3), data.num_train)


def round_peak_bytes(num_clients: int) -> int:
    base = classification_data(num_clients=4).clients[0]
    clients = [ClientData(f"c{k}", base.x_train, base.y_train, base.x_test, base.y_test)
               for k in range(num_clients)]
    model = npgru.SequenceRegressor(3, 64, seed=0)
    sim = fed.Simulation(model, clients, rounds=1, clients_per_round=num_clients,
                         local_update=fresh_delta_update, eval_every=0)
    tracemalloc.start()
    sim.run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_aggregation_memory_does_not_grow_with_the_number_of_clients():
    model_bytes = npgru.SequenceRegressor(3, 64).num_params * 8
    few, many = round_peak_bytes(4), round_peak_bytes(64)
    assert many - few < 2 * model_bytes  # 60 more deltas would be 60 × model_bytes


def test_executors_agree_where_a_threaded_blas_would_split_sums():
    """Matrices big enough for a 2-thread BLAS to change the bits: every executor pins one."""
    threadpoolctl = require("threadpoolctl")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 128)
    x = (rng.normal(size=(128, 40, 8)) + y[:, None, None]).astype(np.float32)
    data = fed.make_clients(x, y, fed.iid_partition(128, 2), test_fraction=0.25)
    model = npgru.SequenceClassifier(8, 128, 4, seed=0)
    finals = {}
    for executor in ("serial", "process"):
        sim = fed.Simulation(model, data, rounds=1, clients_per_round=2, executor=executor,
                             workers=2, training=fed.LocalTraining(batch_size=32))
        with threadpoolctl.threadpool_limits(2):  # what a user's process may well have
            history = sim.run()
        finals[executor] = (sim.model_.flat_params, history[0]["fed_loss"])
    np.testing.assert_array_equal(finals["serial"][0], finals["process"][0])
    assert finals["serial"][1] == finals["process"][1]


def test_a_client_without_test_examples_runs_and_resumes(tmp_path):
    """Its empty test split is part of the data's fingerprint (a zero-size array hashes too)."""
    data = classification_data(num_clients=3)
    c = data.clients[0]
    data.clients[0] = ClientData(c.client_id, c.x_train, c.y_train, c.x_test[:0], c.y_test[:0])
    settings = dict(rounds=2, clients_per_round=3, checkpoint_dir=str(tmp_path), seed=0)
    whole = fed.Simulation(classifier(), data, fed.FedAvg(), **settings).run()
    resumed = fed.Simulation(classifier(), data, fed.FedAvg(), **settings).run(resume=True)
    assert len(whole) == 2 and [r["round"] for r in resumed] == [1, 2]
