"""PyTorch models in and out, as a user does it: train in one, save, predict in the other.

The documented round trip (issue 9 §2):

- **torch → npgru**: ``np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})``
  in PyTorch, then ``npgru.io.from_torch_state_dict(np.load(path))`` — no torch needed there.
- **npgru → torch**: ``model.load_state_dict({k: torch.from_numpy(v) for k, v in
  npgru.io.to_torch_state_dict(m).items()})``, strict, in PyTorch.

Both directions predict what the source model predicts: float32 within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import npgru
from npgru.io import from_torch_state_dict, to_torch_state_dict
from npgru.train import fit

from .torch_reference import gru_model, require_torch

TOL = 1e-5
LENGTHS = np.array([7, 2, 5, 1])


def torch_modules(torch):
    """The seed's ``GRUModel`` (last valid output → Linear) and a char LM, as PyTorch users write
    them; attribute names give the state-dict keys npgru's ready models share."""

    class GRUModel(torch.nn.Module):
        def __init__(self, input_size, hidden_size, output_size, num_layers=1):
            super().__init__()
            self.gru = torch.nn.GRU(input_size, hidden_size, num_layers, batch_first=True)
            self.fc = torch.nn.Linear(hidden_size, output_size)

        def forward(self, x, lengths):
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0],
                                                            batch_first=True)
            return self.fc(out[torch.arange(len(x)), torch.as_tensor(lengths) - 1])

    class CharModel(torch.nn.Module):
        def __init__(self, vocab, embed, hidden, num_layers=1):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, embed)
            self.gru = torch.nn.GRU(embed, hidden, num_layers, batch_first=True)
            self.fc = torch.nn.Linear(hidden, vocab)

        def forward(self, ids):
            return self.fc(self.gru(self.embed(ids))[0])

    return GRUModel, CharModel


def train_torch(torch, module, loss_fn, *batch, steps=20):
    """A few Adam steps, so the weights are PyTorch's own and not an initialisation."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(module, *batch).backward()
        opt.step()
    return module


def save_torch_npz(torch, module, path):
    """The PyTorch side of the hand-over: the state dict as plain arrays."""
    np.savez(path, **{k: v.detach().numpy() for k, v in module.state_dict().items()})


def to_torch(torch, state):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def test_torch_gru_model_to_npgru(tmp_path, rng):
    torch = require_torch()
    GRUModel, _ = torch_modules(torch)
    X = rng.standard_normal((4, 7, 3)).astype(np.float32)
    y = rng.standard_normal((4, 2)).astype(np.float32)
    ref = train_torch(torch, GRUModel(3, 8, 2, num_layers=2),
                      lambda m, x, t: torch.nn.functional.mse_loss(m(x, LENGTHS), t),
                      torch.from_numpy(X), torch.from_numpy(y))
    save_torch_npz(torch, ref, tmp_path / "gru_model.npz")

    with np.load(tmp_path / "gru_model.npz") as state:
        model = from_torch_state_dict(state)
    assert isinstance(model, npgru.SequenceRegressor) and model.num_layers == 2
    expected = ref(torch.from_numpy(X), LENGTHS).detach().numpy()
    np.testing.assert_allclose(model.predict(X, LENGTHS), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_torch_nn_gru_to_npgru(tmp_path, rng, cell):
    """nn.GRU (nn.LSTM) → npgru.GRU (npgru.LSTM), told apart by the gate count alone."""
    torch = require_torch()
    torch.manual_seed(1)
    ref = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](3, 5, num_layers=2, bidirectional=True)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    train_torch(torch, ref, lambda m, x: m(x)[0].square().mean(), torch.from_numpy(x), steps=5)
    save_torch_npz(torch, ref, tmp_path / "rnn.npz")

    with np.load(tmp_path / "rnn.npz") as state:
        rnn = from_torch_state_dict(state)
    assert type(rnn) is {"gru": npgru.GRU, "lstm": npgru.LSTM}[cell]
    out, state_n = rnn.forward(x)
    ref_out, ref_state_n = ref(torch.from_numpy(x))
    np.testing.assert_allclose(out, ref_out.detach().numpy(), atol=TOL, rtol=0)
    pairs = zip(state_n, ref_state_n, strict=True) if cell == "lstm" else [(state_n, ref_state_n)]
    for mine, theirs in pairs:  # h_n (and c_n)
        np.testing.assert_allclose(mine, theirs.detach().numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_npgru_model_to_torch(rng, kind):
    torch = require_torch()
    GRUModel, _ = torch_modules(torch)
    X = rng.standard_normal((16, 7, 3)).astype(np.float32)
    lengths = rng.integers(1, 8, size=16)
    if kind == "regressor":
        model = npgru.SequenceRegressor(3, 8, output_size=2, num_layers=2, seed=0)
        y = rng.standard_normal((16, 2)).astype(np.float32)
    else:
        model = npgru.SequenceClassifier(3, 8, num_classes=2, num_layers=2, seed=0)
        y = rng.integers(0, 2, size=16)
    fit(model, X, y, epochs=3, batch_size=8, lengths=lengths, progress=False, seed=0)

    ref = GRUModel(3, 8, 2, num_layers=2)
    ref.load_state_dict(to_torch(torch, to_torch_state_dict(model)))  # strict: every key
    model.eval()
    expected = ref(torch.from_numpy(X), lengths).detach().numpy()
    np.testing.assert_allclose(model.forward(X, lengths), expected, atol=TOL, rtol=0)


def test_charlm_both_ways_and_fine_tuning_in_between(rng):
    """torch → npgru → a few npgru training steps → torch: each side predicts the other's."""
    torch = require_torch()
    _, CharModel = torch_modules(torch)
    ids = rng.integers(0, 12, size=(6, 9))
    ref = train_torch(torch, CharModel(12, 4, 8, num_layers=2),
                      lambda m, x: torch.nn.functional.cross_entropy(
                          m(x[:, :-1]).reshape(-1, 12), x[:, 1:].reshape(-1)),
                      torch.from_numpy(ids))
    lm = from_torch_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    assert isinstance(lm, npgru.CharLM)
    torch_ids = torch.from_numpy(ids)
    np.testing.assert_allclose(lm.eval().forward(ids), ref(torch_ids).detach().numpy(),
                               atol=TOL, rtol=0)

    fit(lm, ids[:, :-1], ids[:, 1:], epochs=2, batch_size=3, progress=False, seed=0)
    back = CharModel(12, 4, 8, num_layers=2)
    back.load_state_dict(to_torch(torch, to_torch_state_dict(lm)))
    np.testing.assert_allclose(back(torch_ids).detach().numpy(), lm.eval().forward(ids),
                               atol=TOL, rtol=0)
    assert not np.allclose(back(torch_ids).detach().numpy(), ref(torch_ids).detach().numpy())


def test_npgru_gru_to_torch_nn_gru(rng):
    torch = require_torch()
    gru = npgru.GRU(3, 5, num_layers=2, bidirectional=True, bias=False, seed=3)
    ref = torch.nn.GRU(3, 5, num_layers=2, bidirectional=True, bias=False)
    ref.load_state_dict(to_torch(torch, to_torch_state_dict(gru)))
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(gru.forward(x)[0], ref(torch.from_numpy(x))[0].detach().numpy(),
                               atol=TOL, rtol=0)


def test_npgru_lstm_to_torch_nn_lstm(rng):
    torch = require_torch()
    lstm = npgru.LSTM(3, 5, num_layers=2, bidirectional=True, seed=3)
    ref = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    ref.load_state_dict(to_torch(torch, to_torch_state_dict(lstm)))  # strict: every key
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(lstm.forward(x)[0], ref(torch.from_numpy(x))[0].detach().numpy(),
                               atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["regressor", "classifier", "charlm"])
def test_lstm_models_both_ways(rng, kind):
    """``lstm.*`` + ``fc.*`` (+ ``embed.*``) dicts: a PyTorch model with ``self.lstm``."""
    torch = require_torch()
    if kind == "charlm":
        model = npgru.CharLM(9, 4, 6, num_layers=2, cell="lstm", seed=0)
        ids = rng.integers(0, 9, (3, 5))
        back = from_torch_state_dict({k: v.copy() for k, v in to_torch_state_dict(model).items()})
        assert isinstance(back, npgru.CharLM) and back.cell == "lstm"
        np.testing.assert_array_equal(back.forward(ids), model.forward(ids))
        return
    cls = npgru.SequenceRegressor if kind == "regressor" else npgru.SequenceClassifier
    model = cls(3, 8, 2, num_layers=2, cell="lstm", seed=0)
    ref = gru_model(torch, model)  # nn.LSTM under "lstm", loaded strictly from npgru's dict
    X = rng.standard_normal((5, 7, 3)).astype(np.float32)
    lengths = np.array([7, 3, 1, 6, 2])
    expected = ref(torch.from_numpy(X), lengths).detach().numpy()
    np.testing.assert_allclose(model.forward(X, lengths), expected, atol=TOL, rtol=0)
    back = from_torch_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()},
                                 cls)
    assert type(back) is cls and back.cell == "lstm"
    np.testing.assert_allclose(back.forward(X, lengths), expected, atol=TOL, rtol=0)
