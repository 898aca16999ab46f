"""DP, secure aggregation, compression, robust rules, attacks and FedNova inside the simulator.

Each defence is a stage wrapped around a strategy; the deprecated ``Extended`` and
``from_options`` builders are tested to build the same stacks.
"""

from __future__ import annotations

import numpy as np
import pytest

from npgru import fed
from npgru.fed import DifferentialPrivacy, SecureAggregation
from npgru.fed.accountant import RDPAccountant
from npgru.fed.attacks import UpdateAttack
from npgru.fed.extensions import Extended, from_options

from ._fed_common import classification_data, classifier

NUM_CLIENTS = 8


def simulate(strategy, rounds=3, local_steps=None, **kw):
    settings = dict(rounds=rounds, clients_per_round=4, seed=7, eval_every=0,
                    training=fed.LocalTraining(lr=0.2, batch_size=16, steps=local_steps))
    settings.update(kw)
    sim = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), strategy, **settings)
    history = sim.run()
    return sim, history


def test_fedadam_with_dp_and_compression_records_epsilon_and_bytes():
    dp = DifferentialPrivacy(clip=0.5, noise_multiplier=1.0, delta=1e-5)
    strategy = fed.Compress(fed.DPAggregate(fed.FedAdam(), dp), "q4")
    sim, history = simulate(strategy)
    assert np.isfinite(sim.model_.flat_params).all()
    expected = RDPAccountant()
    size = sim.model_.flat_params.size
    for record in history:
        # 4 of 8 clients without replacement: the replace-one analysis, noise multiplier z / 2
        expected.step(4 / NUM_CLIENTS, 0.5, sampling="fixed")
        assert record["epsilon"] == pytest.approx(expected.epsilon(1e-5))
        assert record["bytes_up"] == record["num_ok"] * (-(-size * 4 // 8) + 8)
        assert record["dp_clip"] == 0.5 and record["rejected"] == []
    assert history[0]["epsilon"] < history[-1]["epsilon"]


def test_secure_aggregation_equals_the_plain_clipped_mean():
    plain, _ = simulate(fed.DPAggregate(fed.FedAvg(), DifferentialPrivacy(clip=1.0, noise_multiplier=0.0)))
    secure, history = simulate(
        fed.SecureAggregate(fed.FedAvg(), SecureAggregation(clip=1.0, frac_bits=24))
    )
    # three rounds of a mean of 4 updates, each coordinate exact to 4 · 2^-25
    np.testing.assert_allclose(secure.model_.flat_params, plain.model_.flat_params, atol=1e-5)
    assert all(r["bytes_up"] < r["num_ok"] * 8 * secure.model_.flat_params.size for r in history)


def test_dp_on_a_secure_sum_equals_dp_on_the_plain_sum():
    dp = DifferentialPrivacy(clip=1.0, noise_multiplier=0.5)
    plain, _ = simulate(fed.DPAggregate(fed.FedYogi(), dp))
    secure, history = simulate(fed.SecureAggregate(fed.DPAggregate(fed.FedYogi(), dp),
                                                   SecureAggregation(frac_bits=24)))
    np.testing.assert_allclose(secure.model_.flat_params, plain.model_.flat_params, atol=1e-4)
    assert history[-1]["epsilon"] > 0


def test_secure_aggregation_survives_dropouts_after_masking():
    strategy = fed.SecureAggregate(fed.FedAvg(), SecureAggregation(clip=1.0, dropout=0.3))
    sim, history = simulate(strategy, rounds=4)
    assert any(r["rejected"] for r in history)
    assert all(len(r["rejected"]) <= r["num_ok"] - (r["num_ok"] // 2 + 1) for r in history)
    assert np.isfinite(sim.model_.flat_params).all()


def test_compression_with_error_feedback_keeps_client_memory_and_composes_with_scaffold():
    strategy = fed.Compress(fed.Scaffold(), "topk:0.1")
    sim, history = simulate(strategy)
    states = sim.client_states_
    assert any("ef_memory" in s and "c_i" in s for s in states.values())
    size = sim.model_.flat_params.size
    k = -(-size // 10)
    # deltas go up as top-k (8 bytes per kept entry), SCAFFOLD's Δc_i dense (float64)
    assert all(r["bytes_up"] == r["num_ok"] * (8 * k + 8 * size) for r in history)


def test_serial_and_process_executors_agree_with_extensions():
    def run(executor):
        strategy = fed.Compress(fed.DPAggregate(fed.FedAvg(), DifferentialPrivacy(0.5, 0.5)), "q2")
        sim, history = simulate(strategy, executor=executor, workers=2)
        return sim.model_.flat_params, [r["epsilon"] for r in history]

    (a, eps_a), (b, eps_b) = run("serial"), run("process")
    np.testing.assert_array_equal(a, b)
    assert eps_a == eps_b


def test_robust_aggregator_resists_scaled_attackers_in_the_loop():
    attack = UpdateAttack(frozenset({"client_0", "client_1"}), "scale", 100.0)

    def drift(aggregator):
        sim, history = simulate(fed.RobustAggregate(fed.WithHooks(fed.FedAvg(), [attack]), aggregator),
                                clients_per_round=8, rounds=2)
        return np.linalg.norm(sim.model_.flat_params - classifier().flat_params), history

    mean_drift, _ = drift("mean")
    median_drift, _ = drift("median")
    krum_drift, history = drift("krum:2")
    assert median_drift < 0.1 * mean_drift and krum_drift < 0.1 * mean_drift
    assert all({"client_0", "client_1"} <= set(r["rejected"]) for r in history)


def test_fednova_with_equal_steps_is_fedavg_and_differs_with_unequal_steps():
    base, _ = simulate(fed.FedAvg(), local_steps=3)
    nova, _ = simulate(fed.FedNova(fed.FedAvg()), local_steps=3)
    np.testing.assert_allclose(nova.model_.flat_params, base.model_.flat_params, rtol=1e-6, atol=1e-7)
    steps = {f"client_{i}": 1 + 4 * (i % 2) for i in range(NUM_CLIENTS)}
    base, _ = simulate(fed.FedAvg(), local_steps=steps)
    nova, _ = simulate(fed.FedNova(fed.FedAvg()), local_steps=steps)
    assert not np.allclose(nova.model_.flat_params, base.model_.flat_params)


def test_resume_continues_the_accountant_and_the_adaptive_clip(tmp_path):
    def strategy():
        dp = DifferentialPrivacy(clip=0.1, noise_multiplier=1.0, target_quantile=0.5, count_stddev=1.0)
        return fed.Compress(fed.DPAggregate(fed.FedAvgM(), dp, seed=3), "topk:0.5")

    full, full_history = simulate(strategy(), rounds=4)
    simulate(strategy(), rounds=2, checkpoint_dir=str(tmp_path))
    resumed_strategy = strategy()
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), resumed_strategy, rounds=4,
                             clients_per_round=4, seed=7, eval_every=0, checkpoint_dir=str(tmp_path),
                             training=fed.LocalTraining(lr=0.2, batch_size=16))
    history = resumed.run(resume=True)
    np.testing.assert_array_equal(resumed.model_.flat_params, full.model_.flat_params)
    # every round's figures, the checkpointed ones included, equal the uninterrupted run's
    assert history.series("epsilon") == full_history.series("epsilon")
    assert None not in history.series("epsilon")
    assert history[-1]["dp_clip"] == full_history[-1]["dp_clip"] != 0.1  # the clip moved


DP = DifferentialPrivacy(1.0, 1.0)
ADAPTIVE = DifferentialPrivacy(1.0, 1.0, target_quantile=0.5, count_stddev=1.0)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda s: fed.RobustAggregate(fed.DPAggregate(s, DP), "median"), "cannot be combined with DP"),
        (lambda s: fed.DPAggregate(fed.RobustAggregate(s, "median"), DP), "cannot be combined with DP"),
        (lambda s: fed.SecureAggregate(fed.Compress(s, "q8"), SecureAggregation(clip=1.0)), "compression"),
        (lambda s: fed.Compress(fed.SecureAggregate(s, SecureAggregation(clip=1.0)), "q8"), "compression"),
        (lambda s: fed.DPAggregate(fed.FedNova(s), DP), "FedNova"),
        (lambda s: fed.FedNova(fed.DPAggregate(s, DP)), "FedNova"),
        (lambda s: fed.SecureAggregate(s, SecureAggregation()), "clip bound"),
        (lambda s: fed.SecureAggregate(fed.DPAggregate(s, DP), SecureAggregation(clip=1.0)), "clip bound"),
        (lambda s: fed.SecureAggregate(fed.DPAggregate(s, ADAPTIVE)), "adaptive"),
        (lambda s: fed.DPAggregate(fed.SecureAggregate(s, SecureAggregation(clip=1.0)), DP), "wrap"),
        (lambda s: fed.Compress(s, "q3"), "q8, q4, q2"),
        (lambda s: fed.RobustAggregate(s, "krum:x"), "aggregator"),
        (lambda s: fed.FedNova(s, local_momentum=1.0), "momentum"),
        (lambda s: fed.Compress(fed.Compress(s, "q8"), "q4"), "applied twice"),
    ],
)
def test_bad_combinations_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build(fed.FedAvg())


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
    strategy = fed.SecureAggregate(fed.FedAvg(), SecureAggregation(clip=1e9, frac_bits=40))
    with pytest.raises(ValueError, match="overflow"):
        simulate(strategy)


def test_from_options_builds_what_the_flags_say():
    data = classification_data(NUM_CLIENTS)
    data.meta["num_classes"] = 3
    with pytest.warns(DeprecationWarning, match="from_options"):
        strategy, flipped = from_options(fed.FedAdam(), data, 4, dp_clip=0.5, dp_noise=1.0,
                                         compress="q8", attack="labelflip:0.25", seed=1)
    assert [type(s).__name__ for s in strategy.layers()] == ["Compress", "DPAggregate", "FedAdam"]
    assert strategy.strategy.dp == DifferentialPrivacy(0.5, 1.0, 1e-5) and strategy.spec == "q8"
    changed = [a.client_id for a, b in zip(data.clients, flipped.clients, strict=True)
               if not np.array_equal(a.y_train, b.y_train)]
    assert len(changed) == 2
    np.testing.assert_array_equal(flipped.clients[0].y_test, data.clients[0].y_test)
    with pytest.warns(DeprecationWarning):
        strategy, same = from_options(fed.FedAvg(), data, 8, aggregator="median", attack="scale:10:0.25")
    assert same is data and strategy.find(fed.WithHooks).hooks[0].kind == "scale"
    assert strategy.min_clients == 1 and fed.RobustAggregate(fed.FedAvg(), "krum:2").min_clients == 7


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
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_from_options_refuses_bad_flags(kwargs, match):
    with pytest.raises(ValueError, match=match):
        from_options(fed.FedAvg(), classification_data(NUM_CLIENTS), 8, **kwargs)


@pytest.mark.parametrize("kwargs,build", [
    (dict(dp=DP, compress="q4"), lambda s: fed.Compress(fed.DPAggregate(s, DP), "q4")),
    (dict(secure_agg=SecureAggregation(frac_bits=20), dp=DP, seed=2),
     lambda s: fed.SecureAggregate(fed.DPAggregate(s, DP, seed=2), SecureAggregation(frac_bits=20), seed=2)),
    (dict(aggregator="krum:1", fednova=True),
     lambda s: fed.RobustAggregate(fed.FedNova(s), "krum:1")),
    ({}, lambda s: s),
])
def test_the_deprecated_extended_builds_the_same_stack(kwargs, build):
    with pytest.warns(DeprecationWarning, match="Extended is deprecated"):
        old = Extended(fed.FedAdam(), **kwargs)
    assert old.describe() == build(fed.FedAdam()).describe()
