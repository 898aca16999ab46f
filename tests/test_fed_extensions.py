"""DP, secure aggregation, compression, robust rules, attacks and FedNova inside the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from npgru import fed
from npgru.fed.accountant import RDPAccountant
from npgru.fed.attacks import UpdateAttack
from npgru.fed.extensions import DifferentialPrivacy, Extended, SecureAggregation, from_options

from ._fed_common import classification_data, classifier

NUM_CLIENTS = 8


def simulate(strategy, rounds=3, **kw):
    settings = dict(rounds=rounds, clients_per_round=4, lr=0.2, batch_size=16, seed=7, eval_every=0)
    settings.update(kw)
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), strategy, **settings)
    history = sim.run()
    return sim, history


def test_fedadam_with_dp_and_compression_records_epsilon_and_bytes():
    dp = DifferentialPrivacy(clip=0.5, noise_multiplier=1.0, delta=1e-5)
    strategy = Extended(fed.FedAdam(), dp=dp, compress="q4")
    sim, history = simulate(strategy)
    assert np.isfinite(sim.model_.flat_params).all()
    expected = RDPAccountant()
    size = sim.model_.flat_params.size
    for record in history:
        expected.step(record["num_ok"] / NUM_CLIENTS, 1.0)
        assert record["epsilon"] == pytest.approx(expected.epsilon(1e-5))
        assert record["bytes_up"] == record["num_ok"] * (-(-size * 4 // 8) + 8)
        assert record["dp_clip"] == 0.5 and record["rejected"] == []
    assert history[0]["epsilon"] < history[-1]["epsilon"]


def test_secure_aggregation_equals_the_plain_clipped_mean():
    plain, _ = simulate(Extended(fed.FedAvg(), dp=DifferentialPrivacy(clip=1.0, noise_multiplier=0.0)))
    secure, history = simulate(
        Extended(fed.FedAvg(), secure_agg=SecureAggregation(clip=1.0, frac_bits=24))
    )
    # three rounds of a mean of 4 updates, each coordinate exact to 4 · 2^-25
    np.testing.assert_allclose(secure.model_.flat_params, plain.model_.flat_params, atol=1e-5)
    assert all(r["bytes_up"] < r["num_ok"] * 8 * secure.model_.flat_params.size for r in history)


def test_dp_on_a_secure_sum_equals_dp_on_the_plain_sum():
    dp = DifferentialPrivacy(clip=1.0, noise_multiplier=0.5)
    plain, _ = simulate(Extended(fed.FedYogi(), dp=dp))
    secure, history = simulate(Extended(fed.FedYogi(), dp=dp, secure_agg=SecureAggregation(frac_bits=24)))
    np.testing.assert_allclose(secure.model_.flat_params, plain.model_.flat_params, atol=1e-4)
    assert history[-1]["epsilon"] > 0


def test_secure_aggregation_survives_dropouts_after_masking():
    strategy = Extended(fed.FedAvg(), secure_agg=SecureAggregation(clip=1.0, dropout=0.3))
    sim, history = simulate(strategy, rounds=4)
    assert any(r["rejected"] for r in history)
    assert all(len(r["rejected"]) <= r["num_ok"] - (r["num_ok"] // 2 + 1) for r in history)
    assert np.isfinite(sim.model_.flat_params).all()


def test_compression_with_error_feedback_keeps_client_memory_and_composes_with_scaffold():
    strategy = Extended(fed.Scaffold(), compress="topk:0.1")
    sim, history = simulate(strategy)
    states = sim.client_states_
    assert any("ef_memory" in s and "c_i" in s for s in states.values())
    size = sim.model_.flat_params.size
    k = -(-size // 10)
    # deltas go up as top-k (8 bytes per kept entry), SCAFFOLD's Δc_i dense (float64)
    assert all(r["bytes_up"] == r["num_ok"] * (8 * k + 8 * size) for r in history)


def test_serial_and_process_executors_agree_with_extensions():
    def run(executor):
        strategy = Extended(fed.FedAvg(), compress="q2", dp=DifferentialPrivacy(0.5, 0.5))
        sim, history = simulate(strategy, executor=executor, workers=2)
        return sim.model_.flat_params, [r["epsilon"] for r in history]

    (a, eps_a), (b, eps_b) = run("serial"), run("process")
    np.testing.assert_array_equal(a, b)
    assert eps_a == eps_b


def test_robust_aggregator_resists_scaled_attackers_in_the_loop():
    attack = UpdateAttack(frozenset({"client_0", "client_1"}), "scale", 100.0)

    def drift(aggregator):
        sim, history = simulate(Extended(fed.FedAvg(), aggregator=aggregator, client_hooks=(attack,)),
                                clients_per_round=8, rounds=2)
        return np.linalg.norm(sim.model_.flat_params - classifier().flat_params), history

    mean_drift, _ = drift("mean")
    median_drift, _ = drift("median")
    krum_drift, history = drift("krum:2")
    assert median_drift < 0.1 * mean_drift and krum_drift < 0.1 * mean_drift
    assert all({"client_0", "client_1"} <= set(r["rejected"]) for r in history)


def test_fednova_with_equal_steps_is_fedavg_and_differs_with_unequal_steps():
    base, _ = simulate(fed.FedAvg(), local_steps=3)
    nova, _ = simulate(Extended(fed.FedAvg(), fednova=True), local_steps=3)
    np.testing.assert_allclose(nova.model_.flat_params, base.model_.flat_params, rtol=1e-6, atol=1e-7)
    steps = {f"client_{i}": 1 + 4 * (i % 2) for i in range(NUM_CLIENTS)}
    base, _ = simulate(fed.FedAvg(), local_steps=steps)
    nova, _ = simulate(Extended(fed.FedAvg(), fednova=True), local_steps=steps)
    assert not np.allclose(nova.model_.flat_params, base.model_.flat_params)


def test_resume_continues_the_accountant_and_the_adaptive_clip(tmp_path):
    def strategy():
        dp = DifferentialPrivacy(clip=0.1, noise_multiplier=1.0, target_quantile=0.5, count_stddev=1.0)
        return Extended(fed.FedAvgM(), dp=dp, compress="topk:0.5", seed=3)

    full, full_history = simulate(strategy(), rounds=4)
    simulate(strategy(), rounds=2, checkpoint_dir=str(tmp_path))
    resumed_strategy = strategy()
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), resumed_strategy, rounds=4,
                             clients_per_round=4, lr=0.2, batch_size=16, seed=7, eval_every=0,
                             checkpoint_dir=str(tmp_path))
    history = resumed.run(resume=True)
    np.testing.assert_array_equal(resumed.model_.flat_params, full.model_.flat_params)
    # every round's figures, the checkpointed ones included, equal the uninterrupted run's
    assert history.series("epsilon") == full_history.series("epsilon")
    assert None not in history.series("epsilon")
    assert history[-1]["dp_clip"] == full_history[-1]["dp_clip"] != 0.1  # the clip moved


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dp=DifferentialPrivacy(1.0, 1.0), aggregator="median"), "cannot be combined with DP"),
        (dict(secure_agg=SecureAggregation(clip=1.0), compress="q8"), "compression"),
        (dict(dp=DifferentialPrivacy(1.0, 1.0), fednova=True), "FedNova"),
        (dict(secure_agg=SecureAggregation()), "clip bound"),
        (dict(secure_agg=SecureAggregation(clip=1.0), dp=DifferentialPrivacy(1.0, 1.0)), "clip bound"),
        (dict(secure_agg=SecureAggregation(),
              dp=DifferentialPrivacy(1.0, 1.0, target_quantile=0.5, count_stddev=1.0)), "adaptive"),
        (dict(compress="q3"), "q8, q4, q2"),
        (dict(aggregator="krum:x"), "aggregator"),
        (dict(fednova=True, local_momentum=1.0), "momentum"),
    ],
)
def test_bad_combinations_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Extended(fed.FedAvg(), **kwargs)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: DifferentialPrivacy(clip=1.0, noise_multiplier=-1.0), "noise_multiplier"),
        (lambda: DifferentialPrivacy(clip=0.0, noise_multiplier=1.0), "clip"),
        (lambda: DifferentialPrivacy(clip=1.0, noise_multiplier=1.0, delta=1.0), "delta"),
        (lambda: DifferentialPrivacy(1.0, 1.0, target_quantile=0.5), "count_stddev"),
        (lambda: SecureAggregation(clip=1.0, dropout=1.0), "dropout"),
    ],
)
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_ring_that_could_overflow_is_refused_before_round_one():
    strategy = Extended(fed.FedAvg(), secure_agg=SecureAggregation(clip=1e9, frac_bits=40))
    with pytest.raises(ValueError, match="overflow"):
        simulate(strategy)


def test_from_options_builds_what_the_flags_say():
    data = classification_data(NUM_CLIENTS)
    data.meta["num_classes"] = 3
    strategy, flipped = from_options(fed.FedAdam(), data, 4, dp_clip=0.5, dp_noise=1.0, compress="q8",
                                     attack="labelflip:0.25", seed=1)
    assert strategy.dp == DifferentialPrivacy(0.5, 1.0, 1e-5) and strategy.compress == "q8"
    changed = [a.client_id for a, b in zip(data.clients, flipped.clients, strict=True)
               if not np.array_equal(a.y_train, b.y_train)]
    assert len(changed) == 2
    np.testing.assert_array_equal(flipped.clients[0].y_test, data.clients[0].y_test)
    strategy, same = from_options(fed.FedAvg(), data, 8, aggregator="median", attack="scale:10:0.25")
    assert same is data and strategy.client_hooks[0].kind == "scale"
    assert strategy.min_clients == 1 and Extended(fed.FedAvg(), aggregator="krum:2").min_clients == 7


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dp_noise=1.0), "needs --dp-clip"),
        (dict(secure_agg=True), "needs --dp-clip"),
        (dict(aggregator="krum:1", attack="signflip:0.4"), "more than Krum tolerates"),
        (dict(aggregator="trimmed:0.1", attack="noise:1:0.3"), "more than TrimmedMean tolerates"),
        (dict(attack="labelflip:1.5"), "fraction"),
    ],
)
def test_from_options_refuses_bad_flags(kwargs, match):
    with pytest.raises(ValueError, match=match):
        from_options(fed.FedAvg(), classification_data(NUM_CLIENTS), 8, **kwargs)
