"""Personalisation: fine-tuned evaluation and FedPer-style partial sharing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from npgru import fed
from npgru.cli import main
from npgru.fed.client import FitIns, evaluate_client, local_update, run_fit
from npgru.fed.personalize import LOCAL_STATE, PERSONALIZE_ROUND_OFFSET, local_mask

from ._fed_common import classification_data, classifier

NUM_CLIENTS = 6
TRAINING = fed.LocalTraining(lr=0.2, batch_size=16)


def simulate(rounds=2, **kw):
    settings = dict(rounds=rounds, clients_per_round=3, seed=2, training=TRAINING,
                    federated_eval=True)
    settings.update(kw)
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), **settings)
    return sim, sim.run()


def test_personalized_figures_are_each_clients_fine_tuned_model():
    plain, h_plain = simulate()
    sim, history = simulate(personalize_epochs=2)
    # evaluation changes no training figure
    np.testing.assert_array_equal(plain.model_.flat_params, sim.model_.flat_params)
    record = history[-1]
    assert {"personalized_accuracy", "personalized_accuracy_worst10", "personalized_loss",
            "personalized_loss_worst10"} <= set(record)
    assert set(record["personalized_clients"]) == set(record["fed_clients"])
    # one client by hand: two epochs from the final global model, on a stream of its own
    client = sim.data.clients[0]
    model = classifier()
    ins = FitIns(client.client_id, 2 + PERSONALIZE_ROUND_OFFSET, 2)
    res = run_fit(local_update, model, client, sim.model_.flat_params, ins,
                  dataclasses.replace(TRAINING, epochs=2))
    personal = (sim.model_.flat_params + res.delta).astype(np.float32)
    expected = evaluate_client(model, client, personal).metrics
    assert record["personalized_clients"][client.client_id] == pytest.approx(expected, rel=1e-12)
    assert record["personalized_clients"] != record["fed_clients"]
    values = sorted(v["accuracy"] for v in record["personalized_clients"].values())
    assert record["personalized_accuracy_worst10"] == pytest.approx(values[0])


def test_fedper_keeps_the_head_on_each_client():
    sim, history = simulate(rounds=3, shared_layers=("gru",))
    mask = local_mask(sim.model, ("gru",))
    assert mask.sum() == 3 * 6 + 3  # fc.weight and fc.bias
    np.testing.assert_array_equal(sim.model_.flat_params[mask], sim.model.flat_params[mask])
    assert not np.array_equal(sim.model_.flat_params[~mask], sim.model.flat_params[~mask])
    trained = {cid for r in history for cid in r["ok"]}
    assert trained and all(sim.client_states_[c][LOCAL_STATE].shape == (21,) for c in trained)
    # without fine-tuning, a client's personalised model is the shared GRU and its own head
    record = history[-1]
    cid = sorted(trained)[0]
    own = sim.model_.flat_params.copy()
    own[mask] = sim.client_states_[cid][LOCAL_STATE]
    client = next(c for c in sim.data.clients if c.client_id == cid)
    expected = evaluate_client(classifier(), client, own).metrics
    assert record["personalized_clients"][cid] == pytest.approx(expected, rel=1e-12)


def test_personalisation_is_identical_across_executors_and_on_resume(tmp_path):
    kw = dict(rounds=3, personalize_epochs=1, shared_layers=("gru",))
    _, serial = simulate(**kw)
    _, process = simulate(executor="process", workers=2, **kw)
    keys = ("personalized_clients", "fed_clients")
    assert [[r.get(k) for k in keys] for r in serial] == [[r.get(k) for k in keys] for r in process]
    simulate(**{**kw, "rounds": 2}, checkpoint_dir=str(tmp_path))
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), clients_per_round=3,
                             seed=2, training=TRAINING, checkpoint_dir=str(tmp_path), **kw)
    again = resumed.run(resume=True)
    assert [r.get("personalized_clients") for r in again] == [
        r.get("personalized_clients") for r in serial]


@pytest.mark.parametrize("kw,error,name", [
    (dict(personalize_epochs=-1), ValueError, "personalize_epochs"),
    (dict(personalize_epochs=1.5), TypeError, "personalize_epochs"),
    (dict(shared_layers="gru"), TypeError, "shared_layers"),
    (dict(shared_layers=("rnn",)), ValueError, "shared_layers"),
    (dict(shared_layers=("gru", "fc")), ValueError, "shared_layers"),
])
def test_bad_personalisation_settings_are_refused_by_name(kw, error, name):
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), clients_per_round=3, **kw)
    with pytest.raises(error, match=name):
        sim.check()


def test_federate_flags(tmp_path):
    out = tmp_path / "run"
    tiny = ["--max-clients", "3", "--min-chars", "30000", "--hidden-size", "8", "--seq-len", "20",
            "--quiet", "--batch-size", "16", "--rounds", "1", "--clients-per-round", "2"]
    assert main(["federate", *tiny, "--personalize-epochs", "1", "--shared-layers", "embed,gru",
                 "--out", str(out)]) == 0
    record = json.loads((out / "history.json").read_text())[0]
    assert 0 <= record["personalized_accuracy_worst10"] <= record["personalized_accuracy"] <= 1
    assert main(["federate", *tiny, "--shared-layers", "embed,lstm", "--out", str(out)]) == 2
    assert main(["federate", *tiny, "--personalize-epochs", "-1", "--out", str(out)]) == 2


def test_ditto_trains_fedavg_globally_and_a_personal_model_per_client():
    _, plain = simulate(rounds=2)
    big = fed.LocalTraining(lr=0.2, batch_size=1000)  # one full batch: one step per epoch
    every = dict(training=big, clients_per_round=NUM_CLIENTS)
    fedavg, _ = simulate(rounds=2, **every)
    sim, history = simulate(rounds=2, strategy=fed.Ditto(lam=0.5), **every)
    np.testing.assert_array_equal(sim.model_.flat_params, fedavg.model_.flat_params)
    # a client in both rounds: v1 = w1 − η ∇F(w1); v2 = v1 − η (∇F(v1) + λ (v1 − w2))
    both = set(history[0]["ok"]) & set(history[1]["ok"])
    cid = sorted(both)[0]
    client = next(c for c in sim.data.clients if c.client_id == cid)
    w1 = sim.model.flat_params.copy()
    replay = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), rounds=1, seed=2,
                            **every)
    replay.run()
    w2 = replay.model_.flat_params.copy()
    model = classifier()
    model.train()

    def grad(v):
        model.flat_params[...] = v
        model.loss_and_grad(client.x_train, client.y_train, None)
        return model.flat_grads.copy()

    v1 = (w1 - 0.2 * grad(w1)).astype(np.float32)
    v2 = v1 - (0.2 * (grad(v1) + 0.5 * (v1 - w2))).astype(np.float32)
    np.testing.assert_allclose(sim.client_states_[cid]["personal_params"], v2, rtol=1e-5,
                               atol=1e-6)
    # the personalised figures evaluate the personal models
    expected = evaluate_client(classifier(), client, sim.client_states_[cid]["personal_params"])
    assert history[-1]["personalized_clients"][cid] == pytest.approx(expected.metrics, rel=1e-12)
    assert "personalized_accuracy" in history[-1] and "personalized_accuracy" not in plain[-1]


def test_ditto_is_identical_across_executors_and_on_resume(tmp_path):
    kw = dict(rounds=3, strategy=fed.Ditto(lam=0.1, personal_epochs=2))
    serial, h_serial = simulate(**kw)
    _, h_process = simulate(executor="process", workers=2, **kw)
    assert h_serial.series("personalized_clients") == h_process.series("personalized_clients")
    simulate(**{**kw, "rounds": 2}, checkpoint_dir=str(tmp_path))
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), clients_per_round=3,
                             seed=2, training=TRAINING, federated_eval=True,
                             checkpoint_dir=str(tmp_path), **kw)
    h_resumed = resumed.run(resume=True)
    assert h_resumed.series("personalized_clients") == h_serial.series("personalized_clients")


@pytest.mark.parametrize("kw,error,name", [
    (dict(lam=-1.0), ValueError, "lam"), (dict(lam="big"), TypeError, "lam"),
    (dict(personal_epochs=0), ValueError, "personal_epochs"),
    (dict(personal_epochs=1.5), TypeError, "personal_epochs"),
])
def test_ditto_refuses_bad_settings_by_name(kw, error, name):
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), fed.Ditto(**kw),
                         clients_per_round=3)
    with pytest.raises(error, match=name):
        sim.run()


def test_federate_ditto(tmp_path):
    out = tmp_path / "ditto"
    assert main(["federate", "--max-clients", "3", "--min-chars", "30000", "--hidden-size", "8",
                 "--seq-len", "20", "--quiet", "--batch-size", "16", "--rounds", "1",
                 "--clients-per-round", "2", "--strategy", "ditto", "--ditto-lambda", "0.5",
                 "--out", str(out)]) == 0
    record = json.loads((out / "history.json").read_text())[0]
    assert 0 <= record["personalized_accuracy"] <= 1
