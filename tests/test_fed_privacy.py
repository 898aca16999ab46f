"""DP building blocks: clipping, the Gaussian mechanism, adaptive clipping, the RDP accountant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npgru.fed.accountant import RDPAccountant, epsilon_from_rdp, rdp_sampled_gaussian
from npgru.fed.privacy import AdaptiveClip, clip_l2, gaussian_mechanism, update_noise_multiplier

from .conftest import require

# (q, z, steps): small and large sampling rates, low and high noise, short and long runs
ACCOUNTANT_CASES = [
    (0.01, 1.1, 1000),
    (0.1, 1.0, 100),
    (0.05, 0.7, 500),
    (0.001, 0.5, 10_000),
    (0.2, 5.0, 2000),
    (1.0, 2.0, 50),
]


@pytest.mark.parametrize("q,z,steps", ACCOUNTANT_CASES)
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_accountant_matches_dp_accounting(q, z, steps, delta):
    dpa = require("dp_accounting")
    from dp_accounting.rdp import rdp_privacy_accountant

    theirs = rdp_privacy_accountant.RdpAccountant()
    theirs.compose(
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), steps)
    )
    acc = RDPAccountant()
    acc.step(q, z, steps)
    expected = theirs.get_epsilon(delta)
    assert acc.epsilon(delta) == pytest.approx(expected, rel=0.01)


def test_accountant_composes_additively_and_starts_at_zero():
    acc = RDPAccountant()
    assert acc.epsilon(1e-5) == 0.0
    for _ in range(10):
        acc.step(0.05, 1.0)
    once = RDPAccountant()
    once.step(0.05, 1.0, steps=10)
    np.testing.assert_allclose(acc.rdp, once.rdp, rtol=1e-12)
    assert acc.steps == once.steps == 10


def test_full_batch_is_the_gaussian_mechanism():
    # q = 1: RDP(α) = α / (2 z²) (Mironov 2017, Prop. 7) and the integer-order series agrees
    orders = [2, 3, 8, 32]
    np.testing.assert_allclose(rdp_sampled_gaussian(1.0, 1.5, orders), np.array(orders) / 4.5)
    near_full = rdp_sampled_gaussian(1 - 1e-12, 1.5, orders)
    np.testing.assert_allclose(near_full, np.array(orders) / 4.5, rtol=1e-6)


def test_epsilon_grows_with_steps_and_q_and_falls_with_noise():
    def eps(q, z, t):
        acc = RDPAccountant()
        acc.step(q, z, t)
        return acc.epsilon(1e-5)

    assert eps(0.01, 1.0, 100) < eps(0.01, 1.0, 1000)
    assert eps(0.01, 1.0, 100) < eps(0.1, 1.0, 100)
    assert eps(0.01, 2.0, 100) < eps(0.01, 1.0, 100)
    assert math.isinf(eps(0.01, 0.0, 1))


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, float("nan")])
def test_bad_sampling_rate(q):
    with pytest.raises(ValueError, match="sampling rate q"):
        RDPAccountant().step(q, 1.0)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: RDPAccountant().step(0.1, -1.0), "noise_multiplier"),
        (lambda: RDPAccountant().step(0.1, 1.0, steps=-1), "steps"),
        (lambda: RDPAccountant(orders=[0.5, 2]), "orders"),
        (lambda: epsilon_from_rdp([2, 3], [1.0, 1.0], 0.0), "delta"),
        (lambda: epsilon_from_rdp([2, 3], [1.0], 1e-5), "one value per order"),
    ],
)
def test_accountant_bad_configuration(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_clip_l2():
    d = np.array([3.0, 4.0], dtype=np.float32)
    clipped, norm = clip_l2(d, 1.0)
    assert norm == 5.0 and clipped.dtype == np.float32
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(d, [3.0, 4.0])  # input untouched
    small, _ = clip_l2(d, 10.0)
    np.testing.assert_array_equal(small, d)
    zero, norm0 = clip_l2(np.zeros(3), 1.0)
    assert norm0 == 0.0 and not zero.any()
    with pytest.raises(ValueError, match="clip"):
        clip_l2(d, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        clip_l2(np.array([np.nan]), 1.0)


def test_gaussian_mechanism_noise_scale_and_seed():
    total = np.zeros(200_000, dtype=np.float32)
    out = gaussian_mechanism(total, clip=0.5, noise_multiplier=2.0, rng=np.random.default_rng(0))
    assert out.dtype == np.float32
    assert out.std() == pytest.approx(1.0, rel=0.01)
    again = gaussian_mechanism(total, 0.5, 2.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)
    with pytest.raises(ValueError, match="noise_multiplier"):
        gaussian_mechanism(total, 0.5, -1.0, np.random.default_rng(0))


def test_adaptive_clip_tracks_the_quantile():
    rng = np.random.default_rng(1)
    clip = AdaptiveClip(initial_clip=0.1, target_quantile=0.5, learning_rate=0.2, count_stddev=1.0)
    for _ in range(300):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=100)  # median 1
        clip.update(norms, rng)
    assert clip.clip == pytest.approx(1.0, rel=0.15)
    clip90 = AdaptiveClip(initial_clip=5.0, target_quantile=0.9)
    for _ in range(300):
        clip90.update(rng.lognormal(0.0, 0.5, size=100), rng)
    assert clip90.clip == pytest.approx(math.exp(0.5 * 1.2816), rel=0.15)  # the 90th percentile


def test_update_noise_multiplier_splits_the_budget():
    z_delta = update_noise_multiplier(1.0, count_stddev=5.0)
    # the two queries compose to the original multiplier
    assert (z_delta**-2 + (2 * 5.0) ** -2) ** -0.5 == pytest.approx(1.0)
    assert z_delta > 1.0
    with pytest.raises(ValueError, match="count_stddev"):
        update_noise_multiplier(1.0, count_stddev=0.4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"initial_clip": -1.0}, "clip"),
        ({"target_quantile": 1.0}, "target_quantile"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"count_stddev": -1.0}, "count_stddev"),
    ],
)
def test_adaptive_clip_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveClip(**kwargs)
