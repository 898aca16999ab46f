"""FedNova: normalised averaging removes the bias that unequal local steps give FedAvg."""

from __future__ import annotations

import numpy as np
import pytest

from npgru.fed.fednova import fednova_aggregate, local_norm


def local_sgd(theta, center, steps, lr):
    """``steps`` of SGD on ½‖θ − c‖² from θ; returns the delta."""
    x = theta.copy()
    for _ in range(steps):
        x -= lr * (x - center)
    return x - theta


def test_fednova_is_unbiased_where_fedavg_favours_fast_clients():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (4, 5))
    steps = np.array([1, 2, 5, 40])  # one fast device does 40× the work of the slowest
    optimum = centers.mean(axis=0)  # of the mean objective Σ_k ¼ · ½‖θ − c_k‖²
    lr = 0.01
    errors = {}
    for name in ("fedavg", "fednova"):
        theta = np.zeros(5)
        for _ in range(1500):
            deltas = np.stack([local_sgd(theta, c, int(s), lr) for c, s in zip(centers, steps, strict=True)])
            theta += deltas.mean(axis=0) if name == "fedavg" else fednova_aggregate(deltas, steps)
        errors[name] = np.linalg.norm(theta - optimum)
    fast_bias = np.linalg.norm(centers[3] - optimum)
    assert errors["fedavg"] > 0.5 * fast_bias  # pulled most of the way to the fast client
    # what remains is second order in the local step size (local SGD is not linear in τ)
    assert errors["fednova"] < 0.1 * errors["fedavg"]


def test_equal_steps_give_fedavg():
    rng = np.random.default_rng(1)
    deltas, weights = rng.normal(size=(3, 4)), np.array([1.0, 2.0, 5.0])
    np.testing.assert_allclose(
        fednova_aggregate(deltas, [7, 7, 7], weights), weights @ deltas / weights.sum()
    )


def test_momentum_norm_is_the_sum_of_step_weights():
    rho, tau = 0.9, 12
    assert local_norm(tau, rho) == pytest.approx(sum((1 - rho**i) / (1 - rho) for i in range(1, tau + 1)))
    assert local_norm(tau) == tau


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: local_norm(0), "positive integer"),
        (lambda: local_norm(3, momentum=1.0), "momentum"),
        (lambda: fednova_aggregate(np.zeros((2, 3)), [1]), "one entry per client"),
        (lambda: fednova_aggregate(np.zeros((2, 3)), [1, 2], [1.0, -1.0]), "weights"),
    ],
)
def test_bad_configuration(call, match):
    with pytest.raises(ValueError, match=match):
        call()
