"""MSE and softmax cross-entropy: value and gradient, masking, stability, metrics, errors."""

from __future__ import annotations

import numpy as np
import pytest

import npgru
from npgru.losses import accuracy, mse_loss, perplexity, softmax_cross_entropy

from .torch_reference import require_torch


def test_mse_value_and_gradcheck(rng):
    pred, target = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    loss, dpred = mse_loss(pred, target)
    assert loss == pytest.approx(np.mean((pred - target) ** 2), rel=1e-14)
    err = npgru.gradcheck(lambda: mse_loss(pred, target)[0], {"pred": pred}, {"pred": dpred})
    assert err["pred"] < 1e-9


def test_mse_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="target must have shape"):
        mse_loss(np.zeros((3, 1)), np.zeros(3))


@pytest.mark.parametrize("masked", [False, True])
def test_cross_entropy_gradcheck(masked, rng):
    logits = rng.standard_normal((3, 4, 5))
    targets = rng.integers(0, 5, (3, 4))
    mask = (np.arange(4)[None, :] < np.array([4, 2, 1])[:, None]) if masked else None
    loss, dlogits = softmax_cross_entropy(logits, targets, mask)
    err = npgru.gradcheck(lambda: softmax_cross_entropy(logits, targets, mask)[0],
                          {"logits": logits}, {"logits": dlogits})
    assert err["logits"] < 1e-8
    if masked:
        assert np.all(dlogits[~mask] == 0)  # padded steps get no gradient


def test_cross_entropy_matches_torch_ignore_index(rng):
    torch = require_torch()
    logits = rng.standard_normal((2, 6, 7)) * 3
    targets = rng.integers(0, 7, (2, 6))
    mask = np.arange(6)[None, :] < np.array([6, 3])[:, None]
    loss, _ = softmax_cross_entropy(logits, targets, mask)
    ref = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits).reshape(-1, 7),
        torch.from_numpy(np.where(mask, targets, -100)).reshape(-1), ignore_index=-100)
    assert loss == pytest.approx(ref.item(), rel=1e-13)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]])
    loss, dlogits = softmax_cross_entropy(logits, np.array([0, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss == pytest.approx(np.log(2) / 2)


@pytest.mark.parametrize("targets,err,match", [
    (np.array([0, 3]), ValueError, r"\[0, 3\)"),
    (np.array([-1, 0]), ValueError, r"\[0, 3\)"),
    (np.array([0.0, 1.0]), TypeError, "integer"),
    (np.array([0, 1, 2]), ValueError, "shape"),
])
def test_cross_entropy_refuses_bad_targets(targets, err, match):
    with pytest.raises(err, match=match):
        softmax_cross_entropy(np.zeros((2, 3)), targets)


def test_cross_entropy_refuses_an_empty_mask():
    with pytest.raises(ValueError, match="mask selects no position"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), np.zeros(2))


def test_accuracy_and_perplexity():
    logits = np.array([[[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]])
    targets = np.array([[0, 0, 1]])
    assert accuracy(logits, targets) == pytest.approx(1 / 3)
    assert accuracy(logits, targets, np.array([[1, 0, 0]])) == 1.0
    uniform = softmax_cross_entropy(np.zeros((4, 10)), np.arange(4))[0]
    assert perplexity(uniform) == pytest.approx(10.0)  # a uniform guess over 10 choices
