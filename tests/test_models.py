"""Ready models: whole-model gradcheck, the seed's GRUModel in torch, the shared surface, errors.
Each model is checked with either cell (``cell="gru"`` and ``cell="lstm"``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import npgru
from npgru.losses import length_mask, mse_loss, softmax_cross_entropy

from .torch_reference import gru_model, require_torch

F64 = dict(dtype=np.float64, seed=0)
B, T, D = 3, 5, 3
LENGTHS = np.array([5, 2, 4])
CELLS = ["gru", "lstm"]


def _h0(rng, cell, n, H=4):
    """Initial states: ``h0``, or ``(h0, c0)`` for an LSTM."""
    h0 = rng.standard_normal((n, B, H))
    return h0 if cell == "gru" else (h0, rng.standard_normal((n, B, H)))


def _regression(rng, out=2):
    return rng.standard_normal((B, T, D)), rng.standard_normal((B, out))


def _tokens(rng, V=5):
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def _loss_fn(model, y, lengths):
    if isinstance(model, npgru.SequenceRegressor):
        return lambda pred: mse_loss(pred, y)
    if isinstance(model, npgru.SequenceClassifier):
        return lambda pred: softmax_cross_entropy(pred, y)
    return lambda pred: softmax_cross_entropy(pred, y, length_mask(lengths, *y.shape))


def _model_gradcheck(model, X, y, lengths, h0):
    """Loss → every parameter (via loss_and_grad), the float input and h0 (via backward)."""
    loss_fn = _loss_fn(model, y, lengths)
    loss, _ = model.loss_and_grad(X, y, lengths, h0)
    analytic = {k: g.copy() for k, g in model.grads.items()}
    pred = model.forward(X, lengths, h0)
    assert loss_fn(pred)[0] == loss
    dX, dh0 = model.backward(loss_fn(pred)[1])
    inputs = dict(model.params)
    states, dstates = (h0, dh0) if isinstance(h0, tuple) else ((h0,), (dh0,))
    for name, s, ds in zip(("h0", "c0"), states, dstates, strict=False):
        inputs[name], analytic[name] = s, ds
    if dX is not None:
        inputs["X"], analytic["X"] = X, dX
    loss = lambda: loss_fn(model.forward(X, lengths, h0))[0]  # noqa: E731
    errors = npgru.gradcheck(loss, inputs, analytic)
    for name in [k for k, e in errors.items() if e >= 1e-7]:
        # An entry 1e-5 of its parameter's largest gradient is near the finite difference's
        # round-off (≈1e-14 absolute here), where a relative error means nothing: such entries
        # are held to an absolute 1e-12 instead (an LSTM's reverse direction reaches the last
        # output through one step, so it has some).
        a, n = analytic[name], npgru.numeric_gradient(loss, inputs[name])
        small = np.abs(a) < 1e-5 * np.abs(a).max()
        assert npgru.rel_error(a[~small], n[~small]) < 1e-7, (name, errors[name])
        assert np.abs(a[small] - n[small]).max() < 1e-12, (name, errors[name])
    return errors


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers,bidirectional", [(2, False), (1, True)])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_regressor_gradcheck(num_layers, bidirectional, lengths, cell, rng):
    model = npgru.SequenceRegressor(D, 4, 2, num_layers, bidirectional=bidirectional, cell=cell,
                                    **F64)
    h0 = _h0(rng, cell, num_layers * (2 if bidirectional else 1))
    _model_gradcheck(model, *_regression(rng), lengths, h0)


@pytest.mark.parametrize("cell", CELLS)
def test_classifier_gradcheck(cell, rng):
    model = npgru.SequenceClassifier(D, 4, num_classes=3, num_layers=2, cell=cell, **F64)
    X = rng.standard_normal((B, T, D))
    _model_gradcheck(model, X, np.array([0, 2, 1]), LENGTHS, _h0(rng, cell, 2))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_charlm_gradcheck(lengths, cell, backend, rng):
    model = npgru.CharLM(5, 3, 4, num_layers=2, cell=cell, **F64)
    errors = _model_gradcheck(model, *_tokens(rng), lengths, _h0(rng, cell, 2))
    assert "embed.weight" in errors


def test_regressor_is_the_seeds_gru_model():
    model = npgru.SequenceRegressor(10, 64, num_layers=2)
    layer = [f"gru.{w}_l{k}" for k in (0, 1) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(model.state_dict()) == layer + ["fc.weight", "fc.bias"]
    assert model.state_dict()["gru.weight_ih_l1"].shape == (192, 64)
    assert model.state_dict()["fc.weight"].shape == (1, 64)
    # every named parameter is a view into the one flat vector
    assert all(np.shares_memory(p, model.flat_params) for p in model.gru.params.values())
    assert np.shares_memory(model.fc.grads["weight"], model.flat_grads)


def test_lstm_models_keep_their_layer_under_lstm():
    model = npgru.SequenceRegressor(10, 64, num_layers=2, cell="lstm")
    layer = [f"lstm.{w}_l{k}" for k in (0, 1) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(model.state_dict()) == layer + ["fc.weight", "fc.bias"]
    assert model.state_dict()["lstm.weight_ih_l1"].shape == (256, 64)
    assert model.rnn is model.lstm and isinstance(model.lstm, npgru.LSTM)
    with pytest.raises(ValueError, match="variant='classic' is a GRU setting"):
        npgru.CharLM(5, 3, 4, cell="lstm", variant="classic")
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        npgru.SequenceClassifier(3, 4, 2, cell="rnn")


@pytest.mark.parametrize("cell", CELLS)
def test_child_modules_own_exactly_their_slice(cell):
    model = npgru.SequenceRegressor(3, 8, cell=cell)
    rnn = model.rnn
    assert rnn.flat_params.size == rnn.num_params == (312 if cell == "gru" else 416)
    assert model.fc.flat_params.size == 9
    assert all(np.shares_memory(p, rnn.flat_params) for p in rnn.params.values())
    assert not np.shares_memory(rnn.flat_params, model.fc.flat_params)
    # an optimizer given the child trains the child only
    model.flat_grads[:] = 1
    before = model.flat_params.copy()
    npgru.SGD(rnn, lr=0.1).step()
    changed = model.flat_params != before
    assert changed[: rnn.num_params].all() and not changed[rnn.num_params :].any()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_regressor_forward_and_gradients_equal_torch(lengths, cell, rng):
    torch = require_torch()
    model = npgru.SequenceRegressor(D, 4, 2, num_layers=2, cell=cell, **F64)
    ref = gru_model(torch, model)
    X, y = _regression(rng)
    loss, _ = model.loss_and_grad(X, y, lengths)
    ref_loss = torch.nn.functional.mse_loss(ref(torch.from_numpy(X), lengths), torch.from_numpy(y))
    ref_loss.backward()
    assert loss == pytest.approx(ref_loss.item(), rel=1e-12)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(model.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("cls,args", [
    (npgru.SequenceRegressor, (D, 4)),
    (npgru.SequenceClassifier, (D, 4, 3)),
    (npgru.CharLM, (5, 3, 4)),
])
def test_config_rebuilds_the_architecture(cls, args, cell):
    model = cls(*args, num_layers=2, dropout=0.1, seed=7, cell=cell)
    config = json.loads(json.dumps(model.config()))  # JSON-serialisable
    twin = type(model)(**config)
    assert twin.config() == model.config()
    np.testing.assert_array_equal(twin.flat_params, model.flat_params)  # same seed, same init
    assert cls(*args, seed=8).flat_params.tolist() != cls(*args, seed=7).flat_params.tolist()


def test_predict_shapes_and_types(rng):
    X, _ = _regression(rng)
    assert npgru.SequenceRegressor(D, 4, 2).predict(X).shape == (B, 2)
    clf = npgru.SequenceClassifier(D, 4, 3)
    ids = clf.predict(X, lengths=LENGTHS)
    assert ids.shape == (B,) and ids.dtype.kind == "i" and set(ids) <= {0, 1, 2}
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1, rtol=1e-6)
    lm = npgru.CharLM(5, 3, 4)
    assert lm.predict(_tokens(rng)[0]).shape == (B, T)
    np.testing.assert_array_equal(clf.predict(X, LENGTHS, batch_size=2), ids)  # batched alike


def test_lengths_equal_running_each_sequence_alone(rng):
    model = npgru.SequenceClassifier(D, 4, 3, num_layers=2, **F64)
    X = rng.standard_normal((B, T, D))
    batched = model.forward(X, LENGTHS)
    for b, n in enumerate(LENGTHS):
        np.testing.assert_allclose(batched[b], model.forward(X[b : b + 1, :n])[0], rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_charlm_state_carries_across_windows(cell, rng):
    model = npgru.CharLM(5, 3, 4, num_layers=2, cell=cell, **F64)
    X, _ = _tokens(rng)
    whole = model.forward(X)
    first = model.forward(X[:, :2])
    second = model.forward(X[:, 2:], h0=model.last_state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12)


@pytest.mark.parametrize("cls,args,data", [
    (npgru.SequenceRegressor, (D, 4, 2), "regression"),
    (npgru.SequenceClassifier, (D, 4, 3), "classes"),
    (npgru.CharLM, (5, 3, 4), "tokens"),
])
def test_evaluate_is_batched_in_eval_mode_and_leaves_grads(cls, args, data, rng):
    model = cls(*args, dropout=0.5, **F64)
    X = rng.integers(0, 5, (7, T)) if data == "tokens" else rng.standard_normal((7, T, D))
    y = {"regression": rng.standard_normal((7, 2)), "classes": rng.integers(0, 3, 7),
         "tokens": rng.integers(0, 5, (7, T))}[data]
    lengths = np.array([5, 1, 3, 5, 2, 4, 5])
    model.flat_grads[...] = 3.0
    small = model.evaluate(X, y, lengths, batch_size=2)
    whole = model.evaluate(X, y, lengths)
    assert model.training and np.all(model.flat_grads == 3.0)
    assert small.keys() == whole.keys() and "loss" in whole
    for k in whole:
        assert small[k] == pytest.approx(whole[k], rel=1e-12)
    model.eval()
    assert whole["loss"] == pytest.approx(model.loss_and_grad(X, y, lengths)[0], rel=1e-12)
    if data != "regression":
        assert 0 <= whole["accuracy"] <= 1


def test_dropout_acts_in_training_only(rng):
    model = npgru.SequenceRegressor(D, 8, num_layers=2, dropout=0.5, seed=0)
    X, _ = _regression(rng)
    assert not np.allclose(model.forward(X), model.forward(X))
    model.eval()
    np.testing.assert_array_equal(model.forward(X), model.forward(X))


def test_generate_is_deterministic_per_seed():
    lm = npgru.CharLM(6, 4, 8, seed=0)
    a = lm.generate([1, 2, 3], 20, seed=5)
    assert a.shape == (20,) and a.dtype == np.int64 and a.min() >= 0 and a.max() < 6
    np.testing.assert_array_equal(a, lm.generate(np.array([1, 2, 3]), 20, seed=5))
    assert not np.array_equal(a, lm.generate([1, 2, 3], 20, seed=6))
    assert lm.training  # generation leaves the mode as it was
    greedy = lm.generate([1], 4, temperature=0)
    ids = [1]
    for _ in range(4):
        ids.append(int(lm.predict(np.array([ids]))[0, -1]))
    np.testing.assert_array_equal(greedy, ids[1:])
    assert lm.generate([1], 0).shape == (0,)


@pytest.mark.parametrize("prompt,kw,match", [
    ([], {}, "non-empty"), ([9], {}, r"\[0, 6\)"), ([1], {"n": -1}, "n must"),
    ([1], {"temperature": -1.0}, "temperature"),
])
def test_generate_refuses_bad_arguments(prompt, kw, match):
    with pytest.raises(ValueError, match=match):
        npgru.CharLM(6, 4, 8).generate(prompt, **{"n": 3, **kw})


def _bad_inputs():
    """(model, X, y, lengths, error, message, whether predict sees it too) per bad input."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, T, D))
    nan_X = X.copy()
    nan_X[1, 2, 0] = np.nan
    reg, clf = npgru.SequenceRegressor(D, 4), npgru.SequenceClassifier(D, 4, 3)
    lm = npgru.CharLM(5, 3, 4)
    ids = np.zeros((2, 3), dtype=int)
    cases = {
        "label out of range": (clf, X, [0, 1, 3, 0], None, ValueError,
                               r"y must be class ids in \[0, 3\)", False),
        "float labels": (clf, X, np.zeros(4), None, TypeError, "integer", False),
        "mismatched X/y": (reg, X, np.zeros(3), None, ValueError, "same number of examples", False),
        "NaN in y": (reg, X, [0, np.nan, 0, 0], None, ValueError, "y contains NaN", False),
        "y not like X": (lm, ids, np.zeros((2, 4), int), None, ValueError, "shape of X", False),
        "empty": (reg, X[:0], np.zeros(0), None, ValueError, "empty", True),
        "NaN in X": (reg, nan_X, np.zeros(4), None, ValueError, "X contains NaN", True),
        "wrong width": (npgru.SequenceRegressor(D + 1, 4), X, np.zeros(4), None, ValueError,
                        "input_size", True),
        "lengths out of range": (reg, X, np.zeros(4), [1, 2, 9, 1], ValueError, "lengths", True),
        "token out of range": (lm, ids + 5, ids, None, ValueError, r"X must lie in \[0, 5\)",
                               True),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize("model,X,y,lengths,err,match,in_predict", _bad_inputs())
def test_bad_inputs_get_clear_errors(model, X, y, lengths, err, match, in_predict):
    with pytest.raises(err, match=match):
        model.loss_and_grad(X, y, lengths)
    with pytest.raises(err, match=match):
        model.evaluate(X, y, lengths)
    if in_predict:
        with pytest.raises(err, match=match):
            model.predict(X, lengths)


def test_backward_needs_a_forward(rng):
    model = npgru.SequenceRegressor(D, 4)
    with pytest.raises(npgru.StateError, match="forward"):
        model.backward(np.ones((B, 1)))
