"""Bad input, by the hundred: the command's flags, the public API, damaged files and client
results. Each case asserts the exact exception class (or exit status 2 and one line) and that
the message names the argument; files that a flip leaves readable must load unchanged.

Everything runs in this process on tiny inputs: no case loads a dataset or trains a model.
"""

from __future__ import annotations

import argparse
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import npgru
import npgru.cli
from npgru import fed
from npgru._checks import InputError, InputTypeError, InputValueError
from npgru.cli import INT_FLAGS, REAL_FLAGS, main, make_parser
from npgru.fed.checkpoint import load_checkpoint
from npgru.fed.client import FitRes, check_result

from ._fed_common import classification_data, classifier


# -- the command: every numeric flag of every subcommand ----------------------------------
def _numeric_flags():
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("train", "federate", "generate"):
        for action in sub.choices[command]._actions:
            if action.type in (int, float) and action.dest in {**INT_FLAGS, **REAL_FLAGS}:
                yield command, action


def _cli_cases():
    for command, action in _numeric_flags():
        flag = action.option_strings[-1] if action.dest != "n" else "-n"
        if action.type is int:
            low = INT_FLAGS[action.dest]
            values = [str(low - 1), str(low - 100), "x", "1.5", "1e3", ""]
        else:
            low, high, include_low, _ = REAL_FLAGS[action.dest]
            values = ["nan", "inf", "-inf", "abc", "-1", str(low) if not include_low else "-0.5"]
            if high is not None:
                values.append(str(high + 1))
        for value in values:
            yield pytest.param(command, flag, value, id=f"{command}{flag}={value}")


CLI_CASES = list(_cli_cases())

OPTION_CASES = [(flag, value) for flag, values in {
    "--compress": ["q9", "q0", "topk", "topk:0", "topk:2", "topk:x", "q8:1", "", "zip", "topk:nan"],
    "--aggregator": ["krum", "krum:x", "krum:-1", "trimmed", "trimmed:0.6", "trimmed:x",
                     "normclip:0", "normclip:x", "median:1", "bogus", ""],
    "--attack": ["bogus", "signflip", "signflip:2", "signflip:-0.1", "scale:5", "scale:x:0.1",
                 "noise:-1:0.1", "labelflip:1.5", "signflip:x", ""],
    "--clients-per-round": ["0", "-3", "1.5", "nan", "inf", "0.0", "x", ""],
}.items() for value in values]


@pytest.fixture
def no_data(monkeypatch):
    def refuse(args):
        raise AssertionError("data was loaded before the flags were checked")

    monkeypatch.setattr(npgru.cli, "load_data", refuse)


def assert_one_line_exit_2(capsys, code: int, *names: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert any(name in lines[0] for name in names), (names, lines[0])
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command,flag,value", CLI_CASES)
def test_a_bad_numeric_flag_is_one_line_naming_it(command, flag, value, capsys, no_data,
                                                  tmp_path):
    argv = [command, f"{flag}={value}" if flag.startswith("--") else flag, *(
        [] if flag.startswith("--") else [value])]
    if command == "generate":
        argv += ["--model", str(tmp_path / "model.npz")]
    else:
        argv += ["--out", str(tmp_path)]
    assert_one_line_exit_2(capsys, main(argv), flag)


@pytest.mark.parametrize("flag,value", OPTION_CASES)
def test_a_bad_option_string_is_one_line_naming_it(flag, value, capsys, no_data, tmp_path):
    code = main(["federate", f"{flag}={value}", "--out", str(tmp_path)])
    assert_one_line_exit_2(capsys, code, flag, flag.lstrip("-").replace("-", "_"))


# -- the public API -----------------------------------------------------------------------
T = InputTypeError
V = InputValueError

SIMULATION_CASES = [
    ("rounds", 0, V), ("rounds", -1, V), ("rounds", 1.5, T), ("rounds", "3", T),
    ("rounds", True, T), ("rounds", None, T),
    ("clients_per_round", 0, V), ("clients_per_round", -2, V), ("clients_per_round", 1.5, V),
    ("clients_per_round", "2", T), ("clients_per_round", 99, V),
    ("min_clients", 0, V), ("min_clients", 3, V), ("min_clients", 2.0, T), ("min_clients", "1", T),
    ("eval_every", -1, V), ("eval_every", 0.5, T), ("checkpoint_every", 0, V),
    ("checkpoint_every", "1", T), ("seed", -1, V), ("seed", 1.0, T), ("seed", "0", T),
    ("dropout", -0.1, V), ("dropout", 1.0, V), ("dropout", float("nan"), V), ("dropout", "0", T),
    ("stragglers", 1.5, V), ("stragglers", None, T), ("straggler_policy", "wait", V),
    ("straggler_policy", None, V),
]

TRAINING_CASES = [
    ("lr", 0.0, V), ("lr", -1.0, V), ("lr", float("nan"), V), ("lr", float("inf"), V),
    ("lr", "0.1", T), ("lr", None, T), ("lr", [0.1], T),
    ("batch_size", 0, V), ("batch_size", 2.5, T), ("batch_size", "8", T),
    ("epochs", 0, V), ("epochs", -1, V), ("epochs", 1.0, T), ("epochs", {"c0": 0}, V),
    ("steps", 0, V), ("steps", 2.5, T), ("steps", {"c1": -3}, V),
    ("clip_norm", 0.0, V), ("clip_norm", -5.0, V), ("clip_norm", float("nan"), V),
    ("clip_norm", "1", T), ("time_budget", 0.0, V), ("time_budget", -1.0, V),
    ("time_budget", float("nan"), V), ("time_budget", "10", T), ("time_budget", [1], T),
    ("optimizer", "lbfgs", V), ("optimizer", 3, V),
    ("optimizer_kwargs", {"momentum": -1}, V), ("optimizer_kwargs", {"bogus": 1}, T),
    ("optimizer_kwargs", {"momentum": "x"}, T), ("optimizer_kwargs", {"weight_decay": -1}, V),
    ("optimizer_kwargs", [("momentum", 0.9)], T),
]


@pytest.fixture(scope="module")
def two_clients():
    return classification_data(num_clients=2)


@pytest.mark.parametrize("name,value,error", SIMULATION_CASES)
def test_a_bad_simulation_setting_is_refused_naming_it(name, value, error, two_clients):
    sim = fed.Simulation(classifier(), two_clients, **{"clients_per_round": 2, name: value})
    with pytest.raises(InputError) as e:
        sim.check()
    assert type(e.value) is error, e.value
    assert name in str(e.value)


@pytest.mark.parametrize("name,value,error", TRAINING_CASES)
def test_a_bad_training_setting_is_refused_naming_it(name, value, error, two_clients):
    sim = fed.Simulation(classifier(), two_clients, clients_per_round=2,
                         training=fed.LocalTraining(**{name: value}))
    with pytest.raises(InputError) as e:
        sim.check()
    assert type(e.value) is error, e.value
    assert name in str(e.value)


MODEL_CASES = [
    (npgru.GRU, dict(input_size=0, hidden_size=4), "input_size", V),
    (npgru.GRU, dict(input_size=3, hidden_size=0), "hidden_size", V),
    (npgru.GRU, dict(input_size=3, hidden_size=-4), "hidden_size", V),
    (npgru.GRU, dict(input_size=3, hidden_size=4.0), "hidden_size", T),
    (npgru.GRU, dict(input_size="3", hidden_size=4), "input_size", T),
    (npgru.GRU, dict(input_size=3, hidden_size=4, num_layers=0), "num_layers", V),
    (npgru.GRU, dict(input_size=3, hidden_size=4, num_layers=True), "num_layers", T),
    (npgru.GRU, dict(input_size=3, hidden_size=4, dtype="int32"), "dtype", T),
    (npgru.GRU, dict(input_size=3, hidden_size=4, dtype="float16"), "dtype", T),
    (npgru.CharLM, dict(vocab_size=0, embed_dim=4, hidden_size=8), "vocab_size", V),
    (npgru.CharLM, dict(vocab_size=10, embed_dim=0, hidden_size=8), "embed_dim", V),
    (npgru.CharLM, dict(vocab_size=10, embed_dim=4, hidden_size=2.5), "hidden_size", T),
    (npgru.SequenceClassifier, dict(input_size=3, hidden_size=4, num_classes=0), "num_classes",
     V),
    (npgru.SequenceRegressor, dict(input_size=3, hidden_size=4, output_size=-1), "output_size",
     V),
]


@pytest.mark.parametrize("cls,kwargs,name,error", MODEL_CASES)
def test_a_bad_model_size_is_refused_naming_it(cls, kwargs, name, error):
    with pytest.raises(InputError) as e:
        cls(**kwargs)
    assert type(e.value) is error, e.value
    assert name in str(e.value)


def _bad_states():
    ok = npgru.GRU(3, 4).state_dict()
    yield "missing", {k: v for k, v in ok.items() if k != "bias_hh_l0"}, "bias_hh_l0", V
    yield "extra", {**ok, "weight_ih_l1": ok["weight_ih_l0"]}, "weight_ih_l1", V
    yield "shape", {**ok, "weight_hh_l0": np.zeros((4, 4))}, "weight_hh_l0", V
    yield "nan", {**ok, "bias_ih_l0": np.full(12, np.nan)}, "bias_ih_l0", V
    yield "inf", {**ok, "bias_ih_l0": np.full(12, -np.inf)}, "bias_ih_l0", V
    yield "overflow", {**ok, "bias_ih_l0": np.full(12, 1e39)}, "bias_ih_l0", V
    yield "text", {**ok, "bias_ih_l0": np.array(["a"] * 12)}, "bias_ih_l0", T
    yield "complex", {**ok, "bias_ih_l0": np.zeros(12, complex)}, "bias_ih_l0", T
    yield "object", {**ok, "bias_ih_l0": np.array([None] * 12)}, "bias_ih_l0", T


@pytest.mark.parametrize("kind,state,name,error", list(_bad_states()),
                         ids=[c[0] for c in _bad_states()])
def test_a_bad_state_dict_is_refused_naming_the_entry(kind, state, name, error):
    model = npgru.GRU(3, 4)
    before = model.flat_params.copy()
    with pytest.raises(InputError) as e:
        model.load_state_dict(state)
    assert type(e.value) is error and name in str(e.value), e.value
    np.testing.assert_array_equal(model.flat_params, before)  # nothing written


# -- damaged files ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.npz"
    npgru.save(npgru.CharLM(12, 4, 8, seed=1), str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("c")
    fed.Simulation(classifier(), classification_data(num_clients=2), fed.FedAdam(), rounds=2,
                   clients_per_round=2, eval_every=0, checkpoint_dir=str(folder)).run()
    return (folder / "checkpoint.npz").read_bytes()


def damage(content: bytes, how: str, where: float) -> bytes:
    i = min(int(where * len(content)), len(content) - 1)
    if how == "truncate":
        return content[:i]
    flipped = bytearray(content)
    flipped[i] ^= 1 << (i % 8)
    return bytes(flipped)


DAMAGE = [(how, round(where, 3)) for how, n in (("truncate", 25), ("flip", 45))
          for where in np.linspace(0.0, 0.999, n)]


def _same_model(a, b) -> bool:
    return type(a) is type(b) and a.config() == b.config() and np.array_equal(
        a.flat_params, b.flat_params)


@pytest.mark.parametrize("how,where", DAMAGE)
def test_a_damaged_model_file_is_refused_or_loads_unchanged(how, where, model_bytes, tmp_path):
    original = tmp_path / "original.npz"
    original.write_bytes(model_bytes)
    path = tmp_path / "model.npz"
    path.write_bytes(damage(model_bytes, how, where))
    try:
        model = npgru.load(str(path))
    except InputValueError as e:
        assert str(path) in str(e) and "allow_pickle" not in str(e)
        return
    assert _same_model(model, npgru.load(str(original)))  # a flip in what no reader uses


@pytest.mark.parametrize("how,where", DAMAGE)
def test_a_damaged_checkpoint_is_refused_or_loads_unchanged(how, where, checkpoint_bytes,
                                                            tmp_path):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(damage(checkpoint_bytes, how, where))
    try:
        ckpt = load_checkpoint(str(path))
    except InputValueError as e:
        assert str(path) in str(e) and "allow_pickle" not in str(e)
        return
    (tmp_path / "ok.npz").write_bytes(checkpoint_bytes)
    ref = load_checkpoint(str(tmp_path / "ok.npz"))
    assert ckpt["round"] == ref["round"] and ckpt["meta"] == ref["meta"]
    np.testing.assert_array_equal(ckpt["params"], ref["params"])


CONFIG_EDITS = [("hidden_size", 10**8), ("hidden_size", 7), ("hidden_size", "8"),
                ("vocab_size", 10**12), ("vocab_size", 0), ("embed_dim", 10**9), ("embed_dim", -4),
                ("num_layers", 10**6), ("num_layers", 0), ("dtype", "complex64"),
                ("variant", "lstm"), ("bogus_option", 1)]


@pytest.mark.parametrize("name,value", CONFIG_EDITS)
def test_a_hand_edited_model_header_is_refused_naming_the_file(name, value, model_bytes,
                                                               tmp_path):
    with np.load(io.BytesIO(model_bytes)) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__npgru__"][0]))
    meta["config"][name] = value
    arrays["__npgru__"] = np.array([json.dumps(meta)])
    path = tmp_path / "model.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputValueError) as e:
        npgru.load(str(path))
    assert str(path) in str(e.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_are_never_a_model(tmp_path, content):
    path = tmp_path / "random.npz"
    path.write_bytes(content)
    with pytest.raises(InputValueError, match="random.npz"):
        npgru.load(str(path))


# -- client results -----------------------------------------------------------------------
def _result(**changes) -> FitRes:
    res = FitRes("c0", delta=np.zeros(6), num_examples=10, metrics={"loss": 1.0, "steps": 2})
    for key, value in changes.items():
        setattr(res, key, value)
    return res


RESULT_CASES = [
    (dict(delta=None), "delta"), (dict(delta=[0.0] * 6), "delta"),
    (dict(delta=np.zeros(6, int)), "delta"), (dict(delta=np.zeros(5)), "delta"),
    (dict(delta=np.zeros((6, 1))), "delta"), (dict(delta=np.full(6, np.nan)), "delta"),
    (dict(delta=np.full(6, np.inf)), "delta"), (dict(delta=np.full(6, 1e200)), "delta"),
    (dict(delta=np.full(6, 1e39, np.float64)), "delta"),
    (dict(num_examples=0), "num_examples"), (dict(num_examples=-5), "num_examples"),
    (dict(num_examples=10**400), "num_examples"), (dict(num_examples=2**53 + 1), "num_examples"),
    (dict(num_examples=3.0), "num_examples"), (dict(num_examples=True), "num_examples"),
    (dict(num_examples="10"), "num_examples"), (dict(num_examples=None), "num_examples"),
    (dict(metrics=None), "metrics"), (dict(metrics=[1.0]), "metrics"),
    (dict(metrics={"loss": "low"}), "'loss'"), (dict(metrics={"loss": None}), "'loss'"),
    (dict(metrics={"loss": [1.0]}), "'loss'"), (dict(metrics={"loss": 10**400}), "'loss'"),
    (dict(metrics={1: 1.0}), "metric name"), (dict(metrics={"cb": print}), "'cb'"),
    (dict(metrics={"steps": 0}), "'steps'"), (dict(metrics={"steps": -1}), "'steps'"),
    (dict(metrics={"steps": 2.5}), "'steps'"), (dict(metrics={"ok": True}), "'ok'"),
    (dict(extras={"c": np.zeros(5)}), "extra 'c'"), (dict(extras={"c": "x"}), "extra 'c'"),
    (dict(extras={"c": np.full(6, np.nan)}), "extra 'c'"), (dict(extras=[1]), "extras"),
    (dict(state={"m": np.array(["a"])}), "state 'm'"),
    (dict(state={"m": np.array([np.inf])}), "state 'm'"), (dict(state=None), "states"),
    (dict(error="raised RuntimeError: boom"), "boom"),
    (dict(callback=print), "unexpected attributes ['callback']"),
]


@pytest.mark.parametrize("changes,needle", RESULT_CASES)
def test_a_bad_client_result_is_refused_with_its_reason(changes, needle):
    reason = check_result(_result(**changes), 6, np.float32)
    assert reason is not None and needle in reason, reason


def test_a_good_result_passes_the_same_screen():
    assert check_result(_result(), 6, np.float32) is None


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**30))
def test_any_number_pair_is_accepted_or_refused_by_the_screen_never_raises(x, n):
    limit = float(np.finfo(np.float32).max)
    norm = abs(x) * math.sqrt(6) if math.isfinite(x) else math.inf
    assume(not math.isclose(norm, limit, rel_tol=1e-9))  # the last ulp may go either way
    reason = check_result(_result(delta=np.full(6, x), num_examples=n), 6, np.float32)
    accepted = norm <= limit and 0 < n <= 2**53
    assert (reason is None) == accepted, (x, n, reason)
