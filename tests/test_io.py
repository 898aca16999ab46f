"""save/load: exact round trips, atomic writes, refusal of damaged or pickled files; torch dicts."""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pytest

import npgru
from npgru.io import from_torch_state_dict, to_torch_state_dict

from .torch_reference import gru_model, require_torch

MODELS = [
    pytest.param(lambda: npgru.GRU(3, 4, 2, bidirectional=True, batch_first=True, seed=0), id="gru"),
    pytest.param(lambda: npgru.SequenceRegressor(10, 8, num_layers=2, seed=1), id="regressor"),
    pytest.param(lambda: npgru.SequenceClassifier(3, 5, 4, bidirectional=True, dropout=0.2,
                                                  variant="classic", dtype=np.float64, seed=2),
                 id="classifier"),
    pytest.param(lambda: npgru.CharLM(7, 3, 6, num_layers=2, seed=3), id="charlm"),
    pytest.param(lambda: npgru.LSTM(3, 4, 2, bidirectional=True, bias=False, seed=4), id="lstm"),
    pytest.param(lambda: npgru.SequenceRegressor(10, 8, num_layers=2, cell="lstm", seed=5),
                 id="lstm-regressor"),
    pytest.param(lambda: npgru.SequenceClassifier(3, 5, 4, bidirectional=True, cell="lstm",
                                                  dtype=np.float64, seed=6), id="lstm-classifier"),
    pytest.param(lambda: npgru.CharLM(7, 3, 6, cell="lstm", seed=7), id="lstm-charlm"),
]


@pytest.mark.parametrize("make", MODELS)
def test_round_trip_is_exact(make, tmp_path):
    model = make()
    model.flat_params[...] = np.random.default_rng(0).standard_normal(model.num_params)
    path = tmp_path / "model.npz"
    npgru.save(model, path)
    loaded = npgru.load(path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    assert loaded.dtype == model.dtype
    assert list(loaded.state_dict()) == list(model.state_dict())
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_save_writes_the_path_as_given_and_replaces_atomically(tmp_path, monkeypatch):
    a, b = npgru.SequenceRegressor(3, 4, seed=0), npgru.SequenceRegressor(3, 4, seed=1)
    path = tmp_path / "weights.bin"
    npgru.save(a, path)
    assert os.listdir(tmp_path) == ["weights.bin"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        npgru.save(b, path)
    monkeypatch.undo()
    # the old file is intact and no temporary file is left
    assert os.listdir(tmp_path) == ["weights.bin"]
    np.testing.assert_array_equal(npgru.load(path).flat_params, a.flat_params)


def _npz_bytes(meta: dict | None, params: dict) -> bytes:
    buf = io.BytesIO()
    arrays = {} if meta is None else {"__npgru__": np.array([json.dumps(meta)])}
    np.savez(buf, **arrays, **{"param/" + k: v for k, v in params.items()})
    return buf.getvalue()


def _meta(model, **changes) -> dict:
    return {"format": "npgru-model", "version": 1, "class": type(model).__name__,
            "config": model.config(), **changes}


def _damaged_files():
    model = npgru.SequenceRegressor(3, 4, seed=0)
    good = _npz_bytes(_meta(model), model.params)
    flipped = bytearray(good)
    flipped[len(good) // 2 : len(good) // 2 + 64] = b"\xff" * 64
    obj = io.BytesIO()
    np.savez(obj, __npgru__=np.array([{"class": "GRU"}], dtype=object))
    wrong_shape = {**model.params, "fc.weight": np.zeros((1, 5), dtype=np.float32)}
    return {
        "truncated": (good[: len(good) // 2], "cannot read"),
        "corrupted": (bytes(flipped), "cannot read|not a valid"),
        "empty": (b"", "cannot read"),
        "text": (b"hello world\n" * 10, "cannot read"),
        "pickle": (pickle.dumps({"weights": np.zeros(3)}), r"not an \.npz \(zip\) archive"),
        "object array": (obj.getvalue(), r"object arrays \(pickled data\), which npgru never"),
        "no metadata": (_npz_bytes(None, model.params), "no '__npgru__'"),
        "foreign metadata": (_npz_bytes(_meta(model, format="other"), {}), "does not describe"),
        "unknown class": (_npz_bytes(_meta(model, **{"class": "Transformer"}), {}),
                          "unknown model class"),
        "bad config": (_npz_bytes(_meta(model, config={"hidden": 3}), {}), "unexpected keyword"),
        "wrong shape": (_npz_bytes(_meta(model), wrong_shape),
                        r"fc.weight.*shape \(1, 5\), expected \(1, 4\)"),
    }


@pytest.mark.parametrize("name", list(_damaged_files()))
def test_damaged_files_get_a_clear_error(name, tmp_path):
    data, match = _damaged_files()[name]
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match):
        npgru.load(path)


def test_load_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such npgru model file"):
        npgru.load(tmp_path / "nope.npz")


def test_wrong_architecture_state_dict_is_refused():
    small, big = npgru.SequenceRegressor(3, 4), npgru.SequenceRegressor(3, 5)
    before = small.flat_params.copy()
    with pytest.raises(ValueError, match=r"gru.weight_ih_l0.*shape \(15, 3\), expected \(12, 3\)"):
        small.load_state_dict(big.state_dict())
    with pytest.raises(ValueError, match="missing keys.*weight_ih_l1"):
        npgru.SequenceRegressor(3, 4, num_layers=2).load_state_dict(small.state_dict())
    np.testing.assert_array_equal(small.flat_params, before)  # a failed load changes nothing
    with pytest.raises(ValueError, match="neither a GRU's"):  # 5 gate blocks: no such cell
        from_torch_state_dict({"weight_ih_l0": np.zeros((20, 3)), "weight_hh_l0": np.zeros((20, 4))})
    with pytest.raises(ValueError, match="no 'fc.weight'"):
        from_torch_state_dict({"gru." + k: v for k, v in to_torch_state_dict(small, "gru").items()})


def test_torch_gru_model_state_dict_loads_directly(rng):
    torch = require_torch()
    template = npgru.SequenceRegressor(10, 8, 2, num_layers=2, dtype=np.float64, seed=0)
    ref = gru_model(torch, template)
    for p in ref.parameters():  # torch's own values, not the template's
        torch.nn.init.normal_(p.data)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    model = from_torch_state_dict(state, dtype=np.float64)
    assert isinstance(model, npgru.SequenceRegressor) and model.config()["num_layers"] == 2
    X = rng.standard_normal((3, 5, 10))
    np.testing.assert_allclose(model.forward(X), ref(torch.from_numpy(X)).detach().numpy(),
                               rtol=1e-12)
    clf = from_torch_state_dict(state, npgru.SequenceClassifier, dtype=np.float64)
    assert clf.num_classes == 2
    back = to_torch_state_dict(model)
    assert back.keys() == state.keys()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})


def test_nn_gru_layout_both_ways(rng):
    torch = require_torch()
    ref = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, bias=False, dtype=torch.float64)
    gru = from_torch_state_dict({k: v.numpy() for k, v in ref.state_dict().items()},
                                dtype=np.float64)
    assert (gru.num_layers, gru.bidirectional, gru.bias) == (2, True, False)
    x = rng.standard_normal((5, 2, 3))
    np.testing.assert_allclose(gru.forward(x)[0], ref(torch.from_numpy(x))[0].detach().numpy(),
                               rtol=1e-12)
    model = npgru.SequenceRegressor(3, 4, num_layers=2, dtype=np.float64, seed=0)
    target = torch.nn.GRU(3, 4, num_layers=2, batch_first=True, dtype=torch.float64)
    target.load_state_dict({k: torch.from_numpy(v)
                            for k, v in to_torch_state_dict(model, part="gru").items()})


def test_charlm_state_dict_round_trip():
    lm = npgru.CharLM(7, 3, 6, num_layers=2, seed=0)
    twin = from_torch_state_dict(to_torch_state_dict(lm))
    assert isinstance(twin, npgru.CharLM)
    assert (twin.vocab_size, twin.embed_dim, twin.hidden_size) == (7, 3, 6)
    np.testing.assert_array_equal(twin.flat_params, lm.flat_params)


def test_random_damage_never_escapes_as_another_error(tmp_path):
    model = npgru.CharLM(7, 3, 6, seed=0)
    good_path, bad_path = tmp_path / "good.npz", tmp_path / "bad.npz"
    npgru.save(model, good_path)
    good = good_path.read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(200):
        damaged = bytearray(good)
        if trial % 2:
            damaged = damaged[: rng.integers(0, len(good))]
        else:
            for at, byte in zip(rng.integers(0, len(good), 3), rng.integers(0, 256, 3), strict=True):
                damaged[at] = byte
        bad_path.write_bytes(bytes(damaged))
        try:
            loaded = npgru.load(bad_path)
        except ValueError:
            continue
        # damage the format does not see (zip padding, comments) must not change the weights
        np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
