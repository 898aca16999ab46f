"""DP sampling that matches its accountant: fixed-size (without replacement) or Poisson.

Each scheme's RDP is checked against dp-accounting; in a simulation the recorded ε is that
scheme's accountant at the run's rate, the Poisson draw is seeded, and a resumed or
multi-process Poisson run equals a serial uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgru import fed
from npgru.fed import DifferentialPrivacy
from npgru.fed.accountant import (
    DEFAULT_ORDERS,
    RDPAccountant,
    rdp_sampled_without_replacement_gaussian,
)
from npgru.fed.sampling import SamplingPlan, sample_clients_poisson
from npgru.fed.stages.privacy import ClippedMean

from ._fed_common import classification_data, classifier
from .conftest import require

# (n, m, z, steps): small and large shares, low and high noise (z relative to the replace-one
# sensitivity), the exact-bound orders and the looser one beyond order 256
WOR_CASES = [(1000, 10, 1.1, 1000), (100, 10, 1.0, 100), (200, 10, 0.5, 500),
             (10, 3, 2.0, 50), (50, 10, 5.0, 2000), (10, 5, 0.7, 20), (100_000, 10, 20.0, 10)]


@pytest.mark.parametrize("n,m,z,steps", WOR_CASES)
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_without_replacement_accountant_matches_dp_accounting(n, m, z, steps, delta):
    dpa = require("dp_accounting")
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    theirs = rdp.RdpAccountant(list(DEFAULT_ORDERS), rdp.NeighborRel.REPLACE_ONE)
    theirs.compose(dpa.SelfComposedDpEvent(
        dpa.SampledWithoutReplacementDpEvent(n, m, dpa.GaussianDpEvent(z)), steps))
    acc = RDPAccountant()
    acc.step(m / n, z, steps, sampling="fixed")
    finite = np.isfinite(theirs._rdp)
    np.testing.assert_array_equal(np.isfinite(acc.rdp), finite)
    np.testing.assert_allclose(acc.rdp[finite], theirs._rdp[finite], rtol=1e-9)
    assert acc.epsilon(delta) == pytest.approx(theirs.get_epsilon(delta), rel=0.01)


def test_without_replacement_edges():
    orders = [2, 3.5, 8]
    # the whole population: the Gaussian mechanism itself, α / (2 z²)
    np.testing.assert_allclose(rdp_sampled_without_replacement_gaussian(1.0, 2.0, orders),
                               np.array(orders) / 8)
    assert np.isinf(rdp_sampled_without_replacement_gaussian(0.1, 0.0, orders)).all()
    # fewer clients per round costs less privacy
    small = rdp_sampled_without_replacement_gaussian(0.01, 1.0, orders)
    assert (small < rdp_sampled_without_replacement_gaussian(0.1, 1.0, orders)).all()


@pytest.mark.parametrize("sampling", ["replace", "", "POISSON"])
def test_accountant_refuses_an_unknown_sampling(sampling):
    with pytest.raises(ValueError, match="sampling must be one of"):
        RDPAccountant().step(0.1, 1.0, sampling=sampling)


def test_poisson_sampling_is_seeded_ordered_and_varies_in_size():
    ids = [f"c{i:03d}" for i in range(200)]
    draws = [sample_clients_poisson(ids, 0.1, seed=3, server_round=t) for t in range(1, 41)]
    assert draws[0] == sample_clients_poisson(ids, 0.1, seed=3, server_round=1)
    assert draws[0] != sample_clients_poisson(ids, 0.1, seed=4, server_round=1)
    assert all(d == sorted(d) for d in draws)  # the order of ids: the order of aggregation
    sizes = np.array([len(d) for d in draws])
    assert len(set(sizes)) > 3
    # Binomial(200, 0.1) over 40 rounds: mean 20, standard error 0.67
    assert abs(sizes.mean() - 20) < 3
    plan = SamplingPlan("poisson", 20, 200)
    assert plan.rate == 0.1 and plan.sample(ids, 3, 1) == draws[0]


def test_poisson_mean_divides_by_the_expected_count():
    mean = ClippedMean(3, clip=10.0, noise_multiplier=0.0, rng=np.random.default_rng(0),
                       denominator=4.0)
    mean.add(np.array([1.0, 2.0, 3.0]))
    mean.add(np.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(mean.result(), [0.5, 0.5, 1.0])


NUM_CLIENTS = 10


def run(sampling, rounds=3, **kw):
    dp = DifferentialPrivacy(clip=0.5, noise_multiplier=1.0, delta=1e-5)
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS),
                         fed.DPAggregate(fed.FedAvg(), dp, seed=1), rounds=rounds,
                         clients_per_round=4, sampling=sampling, seed=5, eval_every=0,
                         training=fed.LocalTraining(lr=0.2, batch_size=16, steps=2), **kw)
    return sim, sim.run()


@pytest.mark.parametrize("sampling,q,z", [("fixed", 0.4, 0.5), ("poisson", 0.4, 1.0)])
def test_history_epsilon_is_the_schemes_accountant(sampling, q, z):
    _, history = run(sampling)
    expected = RDPAccountant()
    for record in history:
        assert record["status"] == "ok"
        expected.step(q, z, sampling=sampling)
        assert record["epsilon"] == pytest.approx(expected.epsilon(1e-5), rel=1e-12)
    if sampling == "fixed":
        assert all(r["num_sampled"] == 4 for r in history)


def test_poisson_rounds_vary_and_are_identical_across_executors_and_resume(tmp_path):
    serial, h_serial = run("poisson", rounds=4)
    assert len({r["num_sampled"] for r in h_serial}) > 1
    process, h_process = run("poisson", rounds=4, executor="process", workers=2)
    np.testing.assert_array_equal(serial.model_.flat_params, process.model_.flat_params)
    assert [r["sampled"] for r in h_serial] == [r["sampled"] for r in h_process]
    run("poisson", rounds=2, checkpoint_dir=str(tmp_path))
    resumed, h_resumed = run("poisson", rounds=4, checkpoint_dir=str(tmp_path))
    resumed.run(resume=True)
    np.testing.assert_array_equal(serial.model_.flat_params, resumed.model_.flat_params)
    assert resumed.history_.series("epsilon") == h_serial.series("epsilon")


def test_resume_refuses_another_sampling(tmp_path):
    run("fixed", rounds=1, checkpoint_dir=str(tmp_path))
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), rounds=2,
                         clients_per_round=4, sampling="poisson", checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="different run"):
        sim.run(resume=True)


@pytest.mark.parametrize("value,error", [(1, TypeError), (None, TypeError),
                                         ("uniform", ValueError), ("Poisson", ValueError)])
def test_simulation_refuses_a_bad_sampling(value, error):
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), sampling=value,
                         clients_per_round=4)
    with pytest.raises(error, match="sampling must be 'fixed' or 'poisson'"):
        sim.check()


def test_federate_poisson_sampling_reports_the_sampled_gaussians_epsilon(tmp_path):
    import json

    from npgru.cli import main

    out = tmp_path / "run"
    assert main(["federate", "--max-clients", "3", "--min-chars", "30000", "--hidden-size", "8",
                 "--seq-len", "20", "--quiet", "--batch-size", "16", "--rounds", "2",
                 "--eval-every", "0", "--clients-per-round", "2", "--sampling", "poisson",
                 "--dp-clip", "1.0", "--dp-noise", "1.0", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert any(r["status"] == "ok" for r in history)
    expected = RDPAccountant()
    for record in (r for r in history if r["status"] == "ok"):
        expected.step(2 / 3, 1.0, sampling="poisson")
        assert record["epsilon"] == pytest.approx(expected.epsilon(1e-5), rel=1e-12)
