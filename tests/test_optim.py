"""Optimizers, clipping and schedules equal PyTorch's; state is one flat, checkpointable array."""

from __future__ import annotations

import math

import numpy as np
import pytest

import npgru
from npgru.optim import clip_grad_norm

from .torch_reference import require_torch

N, STEPS = 50, 12

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.5)),
]


def _gradients(rng, p):
    """A gradient that depends on the parameters, so every update rule's result feeds back."""
    return np.sin(3 * p) + 0.1 * rng.standard_normal(p.shape)


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_update_rules_equal_torch(name, kwargs):
    torch = require_torch()
    p0 = np.random.default_rng(0).standard_normal(N)
    p = p0.copy()
    opt = getattr(npgru, name)(p, **kwargs)
    tp = torch.tensor(p0, requires_grad=True)
    ref = getattr(torch.optim, name)([tp], **kwargs)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(STEPS):
        opt.step(_gradients(rng_a, p))
        tp.grad = torch.from_numpy(_gradients(rng_b, tp.detach().numpy()))
        ref.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-13, atol=1e-14)


def test_defaults_are_pytorchs():
    torch = require_torch()
    p = np.zeros(3)
    for name in ("SGD", "Adam", "AdamW"):
        ours, theirs = getattr(npgru, name)(p), getattr(torch.optim, name)([torch.zeros(3)])
        d = theirs.defaults
        assert ours.lr == d["lr"]
        assert ours.weight_decay == d["weight_decay"]
        if name != "SGD":
            assert ours.betas == d["betas"] and ours.eps == d["eps"]


def test_model_optimizer_reads_flat_grads_in_place(rng):
    model = npgru.SequenceRegressor(3, 4, dtype=np.float64, seed=0)
    before = model.flat_params.copy()
    model.flat_grads[...] = rng.standard_normal(model.num_params)
    grads = model.flat_grads.copy()
    npgru.SGD(model, lr=0.5).step()
    np.testing.assert_array_equal(model.flat_params, before - 0.5 * grads)
    np.testing.assert_array_equal(model.flat_grads, grads)  # the gradient is not modified


def test_state_is_one_flat_array_and_resumes_exactly():
    p0 = np.random.default_rng(0).standard_normal(N)
    full, part = p0.copy(), p0.copy()
    a, b = npgru.Adam(full, lr=0.01), npgru.Adam(part, lr=0.01)
    grads = np.random.default_rng(1).standard_normal((6, N))
    for g in grads:
        a.step(g)
    for g in grads[:3]:
        b.step(g)
    state = b.state_dict()
    assert state["state"].shape == (2 * N,) and state["step"] == 3
    resumed = npgru.Adam(part, lr=0.5)
    resumed.load_state_dict(state)
    assert resumed.lr == 0.01
    for g in grads[3:]:
        resumed.step(g)
    np.testing.assert_array_equal(part, full)
    resumed.reset()
    assert resumed.t == 0 and not resumed.state.any()


def test_load_state_dict_refuses_a_foreign_state():
    p = np.zeros(4)
    with pytest.raises(ValueError, match="from a SGD optimizer"):
        npgru.Adam(p).load_state_dict(npgru.SGD(p, momentum=0.9).state_dict())
    with pytest.raises(ValueError, match="shape"):
        npgru.Adam(p).load_state_dict(npgru.Adam(np.zeros(5)).state_dict())
    bad = npgru.Adam(p).state_dict()
    bad["state"][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        npgru.Adam(p).load_state_dict(bad)


def test_clip_grad_norm_equals_torch():
    torch = require_torch()
    for scale in (0.1, 10.0):
        g = np.random.default_rng(2).standard_normal(30) * scale
        t = torch.tensor(g, requires_grad=True)
        t.grad = torch.tensor(g)
        ref_norm = torch.nn.utils.clip_grad_norm_([t], max_norm=1.0)
        norm = clip_grad_norm(g, 1.0)
        assert norm == pytest.approx(ref_norm.item(), rel=1e-14)
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14)
        assert np.linalg.norm(g) <= 1.0


@pytest.mark.parametrize("kind", ["step", "cosine"])
def test_schedules_equal_torch(kind):
    torch = require_torch()
    opt = npgru.SGD(np.zeros(2), lr=0.1)
    ref = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    if kind == "step":
        ours, theirs = npgru.StepLR(opt, 3, gamma=0.5), torch.optim.lr_scheduler.StepLR(ref, 3, 0.5)
    else:
        ours = npgru.CosineAnnealingLR(opt, T_max=7, eta_min=0.01)
        theirs = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=7, eta_min=0.01)
    for _ in range(10):
        ref.step()
        theirs.step()
        ours.step()
        assert opt.lr == pytest.approx(ref.param_groups[0]["lr"], rel=1e-12)


@pytest.mark.parametrize("make,err,match", [
    (lambda: npgru.SGD(np.zeros(2), lr=-1.0), ValueError, "lr"),
    (lambda: npgru.SGD(np.zeros(2), lr=math.nan), ValueError, "lr"),
    (lambda: npgru.SGD(np.zeros(2), nesterov=True), ValueError, "nesterov"),
    (lambda: npgru.Adam(np.zeros(2), betas=(1.0, 0.9)), ValueError, "betas"),
    (lambda: npgru.Adam([0.0, 1.0]), TypeError, "Module or a 1-D float ndarray"),
    (lambda: npgru.Adam(np.zeros(2)).step(), TypeError, "needs grads"),
    (lambda: npgru.Adam(np.zeros(2)).step(np.zeros(3)), ValueError, "shape"),
    (lambda: clip_grad_norm(np.zeros(2), 0.0), ValueError, "max_norm"),
])
def test_bad_arguments(make, err, match):
    with pytest.raises(err, match=match):
        make()
