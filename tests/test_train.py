"""fit: equals a torch training run, memorises with truncated BPTT, stops early, refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest

import npgru
from npgru.train import minibatches

from .torch_reference import gru_model, require_torch

N, T, BATCH, EPOCHS = 40, 6, 8, 4  # 5 steps an epoch, 20 steps in all


def _seed_task(rng, d=10):
    X = rng.standard_normal((N, T, d))
    y = np.tanh(X.sum(axis=(1, 2)) / 4)[:, None] + 0.1 * rng.standard_normal((N, 1))
    return X, y


@pytest.mark.parametrize("opt_name,kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9)), ("Adam", dict(lr=0.01))], ids=["SGD", "Adam"])
def test_twenty_steps_equal_torch(opt_name, kwargs, rng):
    """The seed's GRUModel (input 10, hidden 64, 2 layers, Linear on the last output, MSE)."""
    torch = require_torch()
    X, y = _seed_task(rng)
    model = npgru.SequenceRegressor(10, 64, num_layers=2, dtype=np.float64, seed=0)
    ref = gru_model(torch, model)
    history = npgru.fit(model, X, y, EPOCHS, BATCH, getattr(npgru, opt_name)(model, **kwargs),
                        progress=False, seed=0)

    ref_opt = getattr(torch.optim, opt_name)(ref.parameters(), **kwargs)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    batches = np.random.default_rng(0)  # the same shuffles fit draws from seed=0
    for epoch in range(EPOCHS):
        losses = []
        for idx in minibatches(N, BATCH, batches):
            ref_opt.zero_grad()
            loss = torch.nn.functional.mse_loss(ref(Xt[idx]), yt[idx])
            loss.backward()
            ref_opt.step()
            losses.append(loss.item())
        assert history["loss"][epoch] == pytest.approx(np.mean(losses), rel=1e-8, abs=1e-10)
    with torch.no_grad():
        ref_final = torch.nn.functional.mse_loss(ref(Xt), yt).item()
    final = model.evaluate(X, y)["loss"]
    assert abs(final - ref_final) < 1e-8 * max(1.0, ref_final)
    assert final < history["loss"][0]  # it trained
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(model.params[name], p.detach().numpy(), rtol=1e-7, atol=1e-9)


def _grammar(rows=4, steps=36):
    """A period-7 stream where the token after 0 depends on the one before it (memory needed);
    rows start on a non-zero token, so even each row's first prediction is determined."""
    pattern = np.array([0, 1, 0, 2, 0, 3, 4])
    stream = np.tile(pattern, 20)
    starts = [1, 3, 5, 6][:rows]
    X = np.stack([stream[s : s + steps] for s in starts])
    y = np.stack([stream[s + 1 : s + steps + 1] for s in starts])
    return X, y, pattern


def test_charlm_memorises_a_grammar_with_truncated_bptt():
    X, y, pattern = _grammar()
    lm = npgru.CharLM(5, 4, 16, seed=0)
    # windows of 5 steps start mid-pattern: only the carried state can tell what follows a 0
    history = npgru.fit(lm, X, y, epochs=80, batch_size=4, optimizer=npgru.Adam(lm, lr=0.03),
                        bptt=5, progress=False, seed=0)
    assert history["loss"][-1] < 0.02 and history["accuracy"][-1] == 1.0
    assert lm.evaluate(X, y)["loss"] < 0.02
    continuation = lm.generate([1, 0], 12, temperature=0)
    np.testing.assert_array_equal(continuation, np.tile(pattern, 3)[3:15])
    np.testing.assert_array_equal(lm.generate([1, 0], 12, seed=1), lm.generate([1, 0], 12, seed=1))


def test_truncated_bptt_with_lengths_runs_only_live_sequences(rng):
    lm = npgru.CharLM(5, 3, 6, seed=0)
    X, y = rng.integers(0, 5, (6, 9)), rng.integers(0, 5, (6, 9))
    lengths = np.array([9, 3, 1, 6, 9, 4])
    history = npgru.fit(lm, X, y, epochs=2, batch_size=3, optimizer=npgru.SGD(lm, lr=0.1),
                        lengths=lengths, bptt=4, progress=False, seed=1, validation=(X, y, lengths))
    assert set(history) == {"loss", "accuracy", "perplexity", "val_loss", "val_accuracy",
                            "val_perplexity", "lr"}
    assert np.isfinite(history["loss"]).all()


def test_shuffling_is_seeded(rng):
    X, y = _seed_task(rng, d=3)

    def run(seed):
        model = npgru.SequenceRegressor(3, 4, seed=0)
        npgru.fit(model, X, y, 2, 8, npgru.SGD(model, lr=0.1), progress=False, seed=seed)
        return model.flat_params

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_minibatches_cover_every_index_once():
    batches = list(minibatches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches)) == list(range(10))
    np.testing.assert_array_equal(np.concatenate(list(minibatches(5, 2, None))), np.arange(5))


def test_early_stopping_restores_the_best_epoch(rng):
    X, y = _seed_task(rng, d=3)

    def model_and_opt():
        model = npgru.SequenceRegressor(3, 8, seed=0)
        return model, npgru.Adam(model, lr=0.05)

    model, opt = model_and_opt()
    # the validation targets are the negated training targets: the better the fit, the worse
    history = npgru.fit(model, X, y, 20, 8, opt, validation=(X, -y), patience=2,
                        progress=False, seed=0)
    assert len(history["loss"]) == 3
    assert history["val_loss"][0] < min(history["val_loss"][1:])
    best, opt = model_and_opt()
    npgru.fit(best, X, y, 1, 8, opt, progress=False, seed=0)
    np.testing.assert_array_equal(model.flat_params, best.flat_params)


def test_validation_metrics_schedule_and_clipping(rng):
    X = rng.standard_normal((N, T, 3))
    labels = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    model = npgru.SequenceClassifier(3, 8, 2, seed=0)
    opt = npgru.SGD(model, lr=0.2)
    before = model.flat_params.copy()
    history = npgru.fit(model, X, labels, 3, 40, opt, clip_norm=1e-3, validation=(X, labels),
                        scheduler=npgru.StepLR(opt, 1, gamma=0.5), progress=False)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert history["lr"] == [0.2, 0.1, 0.05]
    # one full batch an epoch, each step at most lr · clip_norm long
    assert np.linalg.norm(model.flat_params - before) <= (0.2 + 0.1 + 0.05) * 1e-3 * (1 + 1e-5)


def test_non_finite_loss_names_the_step_and_keeps_finite_params(rng):
    X, y = _seed_task(rng, d=3)
    model = npgru.SequenceRegressor(3, 4, dtype=np.float64, seed=0)
    start = model.flat_params.copy()
    with pytest.raises(FloatingPointError, match=r"loss is not finite \(inf\) at epoch 1, step 1;"), \
            np.errstate(over="ignore"):
        npgru.fit(model, X, y * 1e200, 1, 8, npgru.SGD(model), progress=False)
    np.testing.assert_array_equal(model.flat_params, start)


def test_overflowing_step_is_undone(rng):
    X, y = _seed_task(rng, d=3)
    model = npgru.SequenceRegressor(3, 4, dtype=np.float64, seed=0)
    opt = npgru.SGD(model, lr=float(np.finfo(np.float64).max))
    npgru.fit(model, X, y, 1, 8, npgru.SGD(model, lr=0.01), progress=False, seed=0)
    trained = model.flat_params.copy()
    # the step either overflows the parameters or makes them so large the next loss does
    with pytest.raises(FloatingPointError, match="not finite|overflowed"), \
            np.errstate(over="ignore", invalid="ignore"):
        npgru.fit(model, X, y, 1, 8, opt, progress=False)
    np.testing.assert_array_equal(model.flat_params, trained)


def _bad_fits():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4, 3))
    nan_X = X.copy()
    nan_X[0, 0, 0] = np.inf
    clf, reg = npgru.SequenceClassifier(3, 4, 2), npgru.SequenceRegressor(3, 4)
    other = npgru.SequenceRegressor(3, 4)
    y = np.zeros(6, dtype=int)
    cases = {
        "label out of range": (clf, X, y + 2, {}, ValueError, r"class ids in \[0, 2\)"),
        "mismatched X/y": (clf, X, y[:5], {}, ValueError, "same number of examples"),
        "empty": (clf, X[:0], y[:0], {}, ValueError, "empty"),
        "NaN": (reg, nan_X, y, {}, ValueError, "NaN or Inf"),
        "epochs": (reg, X, y, {"epochs": 0}, ValueError, "epochs"),
        "batch_size": (reg, X, y, {"batch_size": 2.5}, TypeError, "batch_size"),
        "foreign optimizer": (reg, X, y, {"optimizer": npgru.SGD(other)}, ValueError,
                              "built on this model"),
        "bptt for a regressor": (reg, X, y, {"bptt": 2}, ValueError, "per-step"),
        "clip_norm": (reg, X, y, {"clip_norm": 0.0}, ValueError, "clip_norm"),
        "validation": (reg, X, y, {"validation": X}, TypeError, "validation"),
        "bad validation": (clf, X, y, {"validation": (X, y + 5)}, ValueError, "class ids"),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize("model,X,y,kwargs,err,match", _bad_fits())
def test_bad_input_to_fit(model, X, y, kwargs, err, match):
    before = model.flat_params.copy()
    with pytest.raises(err, match=match):
        npgru.fit(model, X, y, **{"epochs": 1, "batch_size": 2, "progress": False, **kwargs})
    np.testing.assert_array_equal(model.flat_params, before)
