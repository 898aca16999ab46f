"""Robust aggregation against attacker minorities, attack transforms, tolerance checks."""

from __future__ import annotations

import numpy as np
import pytest

from npgru.datasets.base import ClientData
from npgru.fed.aggregate import WeightedMean
from npgru.fed.attacks import (
    UpdateAttack,
    choose_attackers,
    flip_client_labels,
    flip_labels,
    parse_attack,
)
from npgru.fed.client import FitIns, HookContext
from npgru.fed.robust import (
    CoordinateMedian,
    Krum,
    NormBound,
    TrimmedMean,
    check_tolerance,
    coordinate_median,
    krum_scores,
    make_aggregator,
    multi_krum,
    norm_bounded_mean,
    trimmed_mean,
)

K, D = 10, 50
MU = np.full(D, 0.5)


def honest(rng, n):
    return MU + rng.normal(0, 0.1, (n, D))


def attacked(kind):
    """8 honest clients and 2 attackers (20%) applying ``kind`` to an honest update."""
    rng = np.random.default_rng(0)
    good = honest(rng, K)
    ids = [f"c{i}" for i in range(K)]
    hook = UpdateAttack(frozenset(ids[-2:]), *kind)
    for i, cid in enumerate(ids):
        ctx = HookContext(ins=FitIns(cid, server_round=1, seed=0), global_params=np.zeros(D), lr=0.1)
        hook.on_delta(good[i], ctx)
    return good


def run(aggregator, updates):
    for u in updates:
        aggregator.add(u, 1.0)
    return aggregator.result()


ATTACKS = {"signflip": ("signflip",), "scale": ("scale", 20.0), "noise": ("noise", 5.0)}
DEFENCES = {
    "median": lambda: CoordinateMedian(D),
    "trimmed": lambda: TrimmedMean(D, trim=0.2),
    "krum": lambda: Krum(D, num_byzantine=2),
    "multikrum": lambda: Krum(D, num_byzantine=2, num_selected=4),
    "normclip": lambda: NormBound(D, max_norm=4.0),
}
# Norm bounding limits large updates; a sign flip has an honest norm, so it is not expected to help.
PAIRS = [(a, d) for a in ATTACKS for d in DEFENCES if (a, d) != ("signflip", "normclip")]


@pytest.mark.parametrize("attack,defence", PAIRS)
def test_robust_rules_resist_an_attacker_minority(attack, defence):
    updates = attacked(ATTACKS[attack])
    mean_error = np.linalg.norm(run(WeightedMean(D), updates) - MU)
    error = np.linalg.norm(run(DEFENCES[defence](), updates) - MU)
    assert mean_error > 0.35 * np.linalg.norm(MU)  # sign flips shrink the mean to 0.6 μ
    assert error < 0.5 * mean_error
    assert error < 0.35 * np.linalg.norm(MU)


def test_krum_rejects_the_attackers():
    agg = Krum(D, num_byzantine=2, num_selected=6)
    run(agg, attacked(("scale", 20.0)))
    assert {8, 9} <= set(agg.rejected) and len(agg.rejected) == 4
    agg = NormBound(D, max_norm=4.0)
    run(agg, attacked(("scale", 20.0)))
    assert agg.rejected == [8, 9]  # scaled down


def test_rules_against_hand_computed_values():
    u = np.array([[0.0, 10.0], [1.0, -1.0], [2.0, 0.0], [3.0, 1.0], [100.0, 2.0]])
    np.testing.assert_array_equal(coordinate_median(u), [2.0, 1.0])
    np.testing.assert_allclose(trimmed_mean(u, 0.2), [2.0, 1.0])  # drops 1 from each end
    np.testing.assert_allclose(trimmed_mean(u, 0.0), u.mean(axis=0))
    # Krum with f = 1 on 5 points: each score sums the 5 - 1 - 2 = 2 nearest squared distances
    d2 = ((u[:, None] - u[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    np.testing.assert_allclose(krum_scores(u, 1), np.sort(d2, axis=1)[:, :2].sum(1))
    agg, sel = multi_krum(u, 1, 1)
    np.testing.assert_array_equal(agg, u[sel[0]])
    mean, clipped = norm_bounded_mean(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0, np.array([1.0, 3.0]))
    np.testing.assert_allclose(mean, (np.array([0.6, 0.8]) + 3 * np.array([0.3, 0.4])) / 4)
    np.testing.assert_array_equal(clipped, [0])


def test_min_clients():
    assert Krum(D, num_byzantine=2).min_clients == 7
    assert Krum(D, num_byzantine=1, num_selected=8).min_clients == 9
    assert CoordinateMedian(D).min_clients == 1


def test_tolerance_checks():
    with pytest.raises(ValueError, match="more than 2f \\+ 2"):
        krum_scores(np.zeros((6, 3)), 2)  # K = 6 <= 2·2 + 2
    with pytest.raises(ValueError, match="trim fraction"):
        TrimmedMean(D, trim=0.5)
    check_tolerance(TrimmedMean(D, trim=0.2), num_clients=10, num_attackers=2)
    with pytest.raises(ValueError, match="more than TrimmedMean tolerates \\(1\\)"):
        check_tolerance(TrimmedMean(D, trim=0.1), num_clients=10, num_attackers=2)
    with pytest.raises(ValueError, match="more than CoordinateMedian tolerates \\(4\\)"):
        check_tolerance(CoordinateMedian(D), num_clients=10, num_attackers=5)
    with pytest.raises(ValueError, match="more than 6 clients"):
        check_tolerance(Krum(D, num_byzantine=2), num_clients=6, num_attackers=1)
    with pytest.raises(ValueError, match="num_selected"):
        multi_krum(np.zeros((10, 3)), 2, num_selected=9)
    with pytest.raises(ValueError, match="max_norm"):
        NormBound(D, max_norm=-1.0)


@pytest.mark.parametrize(
    "spec,cls", [("median", CoordinateMedian), ("trimmed:0.1", TrimmedMean), ("krum:2", Krum),
                 ("normclip:1.5", NormBound), ("mean", WeightedMean)]
)
def test_make_aggregator(spec, cls):
    assert isinstance(make_aggregator(spec)(D, True), cls)


@pytest.mark.parametrize("spec", ["krum:-1", "trimmed:0.6", "normclip:0", "krum", "median:3", "avg"])
def test_make_aggregator_refuses_bad_specs(spec):
    with pytest.raises(ValueError, match="aggregator"):
        make_aggregator(spec)


def test_choose_attackers_is_seeded_and_sized():
    ids = [f"c{i}" for i in range(50)]
    a = choose_attackers(ids, 0.2, seed=3)
    assert len(a) == 10 and a == choose_attackers(list(reversed(ids)), 0.2, seed=3)
    assert a != choose_attackers(ids, 0.2, seed=4)
    with pytest.raises(ValueError, match="fraction"):
        choose_attackers(ids, 1.0, seed=0)


def test_attack_hooks_touch_only_attackers():
    updates = attacked(("signflip",))
    clean = honest(np.random.default_rng(0), K)
    np.testing.assert_array_equal(updates[:8], clean[:8])
    np.testing.assert_array_equal(updates[8:], -clean[8:])
    np.testing.assert_allclose(attacked(("scale", 3.0))[9], 3 * clean[9])
    noisy = attacked(("noise", 5.0))
    np.testing.assert_array_equal(noisy, attacked(("noise", 5.0)))  # seeded by (seed, round, client)
    assert abs(noisy[8].std() - 5.0) < 1.5


def test_label_flipping():
    np.testing.assert_array_equal(flip_labels(np.array([0, 1, 2, 3]), 4), [3, 2, 1, 0])
    clients = [ClientData(f"c{i}", np.zeros((3, 1)), np.array([0, 1, 2]), np.zeros((1, 1)), np.array([0]))
               for i in range(2)]
    out = flip_client_labels(clients, frozenset({"c1"}), 3)
    np.testing.assert_array_equal(out[0].y_train, [0, 1, 2])
    np.testing.assert_array_equal(out[1].y_train, [2, 1, 0])
    np.testing.assert_array_equal(out[1].y_test, [0])
    with pytest.raises(ValueError, match="labels must lie"):
        flip_labels(np.array([0, 5]), 3)
    with pytest.raises(TypeError, match="integer class ids"):
        flip_labels(np.array([0.5]), 3)


def test_parse_attack():
    assert parse_attack("signflip:0.2") == ("signflip", 1.0, 0.2)
    assert parse_attack("scale:10:0.1") == ("scale", 10.0, 0.1)
    assert parse_attack("noise:0.5:0.3") == ("noise", 0.5, 0.3)
    assert parse_attack("labelflip:0.25") == ("labelflip", 1.0, 0.25)
    for bad in ("signflip", "scale:0.1", "noise:-1:0.2", "flip:0.1", "signflip:1.5", "scale:x:0.1"):
        with pytest.raises(ValueError):
            parse_attack(bad)
