"""Fault injection: one test per defect a hostile tester found (hangs, bad results, damaged
files, absurd sizes, misleading messages). Each test failed before its fix.

Tests that could hang on a regression carry a pytest-level timeout (thread method: the serial
executor's deadline uses the SIGALRM timer itself), so a regression fails instead of hanging.
"""

from __future__ import annotations

import signal
import sys
import time

import numpy as np
import pytest

from npgru import fed
from npgru._checks import InputTypeError, InputValueError
from npgru.datasets import ClientData

from ._fed_common import classification_data, classifier

HANG_TIMEOUT = pytest.mark.timeout(120, method="thread")


def clients(kinds):
    base = classification_data(num_clients=len(kinds)).clients
    return [ClientData(f"c{k}{kind}", c.x_train, c.y_train, c.x_test, c.y_test)
            for k, (kind, c) in enumerate(zip(kinds, base, strict=True))]


def training(time_budget=None):
    return fed.LocalTraining(lr=0.2, batch_size=8, time_budget=time_budget)


def sim_of(kinds, update, time_budget=None, strategy=None, **kw):
    settings = dict(rounds=1, clients_per_round=len(kinds), seed=7, local_update=update,
                    eval_every=0, training=training(time_budget))
    settings.update(kw)
    return fed.Simulation(classifier(), clients(kinds), strategy or fed.FedAvg(), **settings)


def good_model(kinds, rounds=1):
    """The model that only the well-behaved clients (id without a suffix) produce."""
    good = [c for c in clients(kinds) if c.client_id[1:].isdigit()]
    sim = fed.Simulation(classifier(), good, fed.FedAvg(), rounds=rounds,
                         clients_per_round=len(good), seed=7, eval_every=0, training=training())
    sim.run()
    return sim.model_.flat_params


# -- 1: a hanging client ---------------------------------------------------------------------
def hanging_update(model, data, ins, training):
    """Clients whose id says so get stuck inside their first step."""
    cid = ins.client_id
    if cid.endswith("sleep"):
        time.sleep(3600)
    elif cid.endswith("spin"):
        while True:
            pass
    elif cid.endswith("swallow"):  # catches every Exception and sleeps again
        while True:
            try:
                time.sleep(3600)
            except Exception:  # noqa: BLE001, S110 - the point of this client
                pass
    elif cid.endswith("deaf"):  # blocks the timer signal: only a kill from outside stops it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    return fed.local_update(model, data, ins, training)


@HANG_TIMEOUT
@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_client_stuck_inside_a_step_is_timed_out_and_the_round_goes_on(executor):
    kinds = ["", "sleep", "spin", "swallow", ""]
    good_model(kinds)  # warm-up (JIT) before any deadline runs
    sim = sim_of(kinds, hanging_update, time_budget=1.0, executor=executor, workers=2,
                 rounds=2)
    history = sim.run()
    for record in history:
        assert record["ok"] == ["c0", "c4"] and record["status"] == "ok"
        for cid in ("c1sleep", "c2spin", "c3swallow"):
            assert record["dropped"][cid].startswith("timeout"), record["dropped"]
    np.testing.assert_array_equal(sim.model_.flat_params, good_model(kinds, rounds=2))


@HANG_TIMEOUT
def test_the_process_executor_kills_and_replaces_a_worker_its_timer_cannot_stop():
    kinds = ["", "deaf", "", ""]
    good_model(kinds)
    sim = sim_of(kinds, hanging_update, time_budget=0.5, executor="process", workers=1,
                 rounds=2)
    history = sim.run()
    for record in history:
        assert record["ok"] == ["c0", "c2", "c3"]
        assert "was killed" in record["dropped"]["c1deaf"]
        assert record["dropped"]["c1deaf"].startswith("timeout")


@HANG_TIMEOUT
def test_off_the_main_thread_the_serial_executor_warns_that_it_cannot_interrupt():
    import threading

    caught = []

    def run():
        with pytest.warns(RuntimeWarning, match="only in the main thread"):
            caught.append(sim_of(["", ""], fed.local_update, time_budget=30.0).run())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert caught and caught[0][0]["ok"] == ["c0", "c1"]


# -- 4, 9, 10: one client's bad result drops only that client --------------------------------
def bad_result_update(model, data, ins, training):
    res = fed.local_update(model, data, ins, training)
    kind = ins.client_id.lstrip("c0123456789")
    if kind == "hugen":
        res.num_examples = 10**400
    elif kind == "floatn":
        res.num_examples = 3.0
    elif kind == "textmetric":
        res.metrics["loss"] = "low"
    elif kind == "lambdametric":
        res.metrics["callback"] = lambda: None
    elif kind == "steps0":
        res.metrics["steps"] = 0
    elif kind == "nosteps":
        del res.metrics["steps"]
    elif kind == "huge":
        res.delta[:] = 1e200
    elif kind == "inf":
        res.delta[3] = np.inf
    elif kind == "exit":
        sys.exit(3)
    elif kind == "base":
        raise BaseException("not an Exception")
    elif kind == "metrics":
        res.metrics = [("loss", 1.0)]
    return res


KINDS = ["", "hugen", "floatn", "textmetric", "lambdametric", "steps0", "huge", "inf", "exit",
         "base", "metrics", ""]
REASONS = {
    "c1hugen": "invalid num_examples a 1329-bit integer",
    "c2floatn": "invalid num_examples 3.0",
    "c3textmetric": "invalid metric 'loss': expected a real number, got str",
    "c4lambdametric": "invalid metric 'callback': expected a real number, got function",
    "c5steps0": "invalid metric 'steps' 0",
    "c6huge": "delta too large: its L2 norm inf exceeds the float32 range",
    "c7inf": "non-finite delta",
    "c8exit": "raised SystemExit: 3",
    "c9base": "raised BaseException: not an Exception",
    "c10metrics": "invalid metrics: expected a dict, got list",
}


@HANG_TIMEOUT
@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_bad_result_drops_only_its_client_the_same_way_in_every_executor(executor):
    sim = sim_of(KINDS, bad_result_update, executor=executor, workers=2)
    record = sim.run()[0]
    assert record["status"] == "ok" and record["ok"] == ["c0", "c11"]
    for cid, reason in REASONS.items():
        assert record["dropped"][cid].startswith(reason), (cid, record["dropped"][cid])
    np.testing.assert_array_equal(sim.model_.flat_params, good_model(KINDS))


def test_fednova_drops_a_client_that_reports_no_steps():
    kinds = ["", "nosteps", ""]
    record = sim_of(kinds, bad_result_update, strategy=fed.FedNova(fed.FedAvg())).run()[0]
    assert record["ok"] == ["c0", "c2"]
    assert "steps" in record["dropped"]["c1nosteps"]


def test_a_huge_finite_delta_is_screened_in_float64_before_the_sum():
    # 1e200 squares to inf in float64: the norm screen, not the aggregate, catches it; a
    # delta within range but large still counts.
    res = fed.FitRes("c", delta=np.full(4, 1e200), num_examples=1, metrics={"steps": 1})
    assert fed.client.check_result(res, 4, np.float64).startswith("delta too large")
    res.delta = np.full(4, 1e30)
    assert fed.client.check_result(res, 4, np.float32) is None
    res.delta = np.full(4, 1e39)
    assert fed.client.check_result(res, 4, np.float32).startswith("delta too large")
    assert fed.client.check_result(res, 4, np.float64) is None


def test_keyboard_interrupt_in_a_client_still_stops_the_run():
    def interrupted(model, data, ins, training):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sim_of(["", ""], interrupted).run()


def test_workers_ignore_ctrl_c_so_only_the_parent_reports_it():
    from npgru.fed.executors import ProcessExecutor

    ex = ProcessExecutor(1)
    ex.start(classifier(), clients([""]), fed.LocalTraining(), fed.local_update)
    try:
        handler = ex._pool.apply(signal.getsignal, (signal.SIGINT,))
    finally:
        ex.close()
    assert handler == signal.SIG_IGN


# -- 3: damaged checkpoints ------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The bytes of a real two-round checkpoint, and the settings that wrote it."""
    folder = tmp_path_factory.mktemp("ckpt")
    kinds = ["", "", ""]
    sim_of(kinds, fed.local_update, rounds=2, checkpoint_dir=str(folder)).run()
    return (folder / "checkpoint.npz").read_bytes()


def resume_from(tmp_path, content: bytes):
    (tmp_path / "checkpoint.npz").write_bytes(content)
    sim = sim_of(["", "", ""], fed.local_update, rounds=3, checkpoint_dir=str(tmp_path))
    return sim.run(resume=True)


def rewrite(content: bytes, tmp_path, **changes) -> bytes:
    """The checkpoint with some entries replaced (None: removed)."""
    import io

    with np.load(io.BytesIO(content)) as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def damaged(content: bytes, tmp_path) -> dict:
    import json

    history = json.loads(str(np.load(__import__("io").BytesIO(content))["history"]))
    return {
        "empty": b"",
        "truncated": content[: len(content) // 2],
        "truncated_tail": content[:-10],
        "text": b"not a checkpoint at all",
        "npy": b"\x93NUMPY" + content[6:],
        "round_2.5": rewrite(content, tmp_path, round=np.array(2.5)),
        "round_negative": rewrite(content, tmp_path, round=np.array(-1)),
        "round_text": rewrite(content, tmp_path, round=np.array("2")),
        "history_short": rewrite(content, tmp_path, history=np.array(json.dumps(history[:1]))),
        "history_not_json": rewrite(content, tmp_path, history=np.array("[{")),
        "history_not_list": rewrite(content, tmp_path, history=np.array("{}")),
        "meta_missing": rewrite(content, tmp_path, meta=None),
        "params_missing": rewrite(content, tmp_path, params=None),
        "params_nan": rewrite(content, tmp_path, params=np.full(10, np.nan)),
        "params_2d": rewrite(content, tmp_path, params=np.zeros((2, 2))),
        "params_int": rewrite(content, tmp_path, params=np.zeros(10, dtype=np.int64)),
        "format_wrong": rewrite(content, tmp_path, format=np.array("npgru-model")),
        "client_ids_missing": rewrite(content, tmp_path, client_ids=None),
        "unknown_key": rewrite(content, tmp_path, bogus=np.zeros(1)),
        "client_index_out_of_range": rewrite(content, tmp_path, client__7__c=np.zeros(1)),
        "client_state_text": rewrite(content, tmp_path, client__0__c=np.array("x")),
    }


DAMAGE = ["empty", "truncated", "truncated_tail", "text", "npy", "round_2.5", "round_negative",
          "round_text", "history_short", "history_not_json", "history_not_list", "meta_missing",
          "params_missing", "params_nan", "params_2d", "params_int", "format_wrong",
          "client_ids_missing", "unknown_key", "client_index_out_of_range", "client_state_text"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_refused_with_one_precise_error(kind, checkpoint, tmp_path):
    content = damaged(checkpoint, tmp_path)[kind]
    with pytest.raises(ValueError, match="checkpoint") as e:
        resume_from(tmp_path, content)
    assert isinstance(e.value, InputValueError)
    assert "allow_pickle" not in str(e.value) and ".tmp" not in str(e.value)
    assert str(tmp_path / "checkpoint.npz") in str(e.value)


def test_a_checkpoint_of_another_size_is_refused_before_it_is_loaded(checkpoint, tmp_path):
    content = rewrite(checkpoint, tmp_path, params=np.zeros(7, dtype=np.float32))
    with pytest.raises(InputValueError, match="'params' has shape"):
        resume_from(tmp_path, content)


# -- 6, 7, 12: model files and state dicts ---------------------------------------------------
def model_file(tmp_path, model=None, **edits) -> str:
    """A saved model file, its header config or arrays edited (None: removed)."""
    import json

    import npgru

    path = str(tmp_path / "model.npz")
    npgru.save(model if model is not None else npgru.CharLM(12, 4, 8), path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__npgru__"][0]))
    for key, value in edits.items():
        if key.startswith("config_"):
            meta["config"][key[len("config_"):]] = value
        elif value is None:
            del arrays[key.replace("__", "/")]
        else:
            arrays[key.replace("__", "/")] = value
    arrays["__npgru__"] = np.array([json.dumps(meta)])
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name,value", [("hidden_size", 10**8), ("vocab_size", 10**10),
                                        ("embed_dim", 10**9), ("num_layers", 10**6)])
def test_a_config_claiming_a_huge_size_is_refused_before_allocating(name, value, tmp_path):
    import npgru

    path = model_file(tmp_path, **{f"config_{name}": value})
    with pytest.raises(InputValueError, match=f"{name}={value}"):
        npgru.load(path)


@pytest.mark.parametrize("where", ["load_state_dict", "from_torch_state_dict", "load"])
def test_values_that_overflow_float32_are_refused_after_the_cast(where, tmp_path):
    import npgru

    model = npgru.GRU(3, 4)
    state = model.state_dict()
    state["weight_hh_l0"] = state["weight_hh_l0"].astype(np.float64)
    state["weight_hh_l0"][0, 0] = 1e300
    with pytest.raises(InputValueError, match=r"weight_hh_l0.*float32 range"):
        if where == "load_state_dict":
            model.load_state_dict(state)
        elif where == "from_torch_state_dict":
            npgru.from_torch_state_dict(state)
        else:
            model64 = npgru.GRU(3, 4, dtype=np.float64)
            model64.load_state_dict(state)
            path = model_file(tmp_path, model64, config_dtype="float32")
            npgru.load(path)


@pytest.mark.parametrize("content,needle", [
    (b"this is not an npz file", "not an .npz (zip) archive"),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", "single .npy array"),
    (b"", "not an .npz (zip) archive"),
])
def test_a_file_that_is_not_an_archive_gets_an_honest_message(content, needle, tmp_path):
    import npgru

    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(InputValueError) as e:
        npgru.load(str(path))
    assert needle in str(e.value) and str(path) in str(e.value)
    assert "allow_pickle" not in str(e.value) and "context manager" not in str(e.value)


def test_object_arrays_are_refused_without_the_unsafe_advice(tmp_path):
    import npgru

    path = str(tmp_path / "model.npz")
    np.savez(path, __npgru__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputValueError, match="pickled data") as e:
        npgru.load(path)
    assert "allow_pickle" not in str(e.value)


# -- 5: settings that make every client or round fail are refused up front -------------------
@pytest.mark.parametrize("training,error,needle", [
    (dict(clip_norm=0.0), InputValueError, "clip_norm"),
    (dict(clip_norm=-1.0), InputValueError, "clip_norm"),
    (dict(clip_norm=float("nan")), InputValueError, "clip_norm"),
    (dict(time_budget=0.0), InputValueError, "time_budget"),
    (dict(time_budget=float("nan")), InputValueError, "time_budget"),
    (dict(time_budget="10"), InputTypeError, "time_budget"),
    (dict(optimizer_kwargs={"momentum": -1}), InputValueError, "optimizer_kwargs"),
    (dict(optimizer_kwargs={"bogus": 1}), InputTypeError, "optimizer_kwargs"),
    (dict(optimizer="adam", optimizer_kwargs={"betas": (2, 0.9)}), InputValueError,
     "optimizer_kwargs"),
])
def test_training_settings_that_fail_every_client_are_refused_before_any_round(
        training, error, needle):
    def never(*args):
        raise AssertionError("a client ran")

    sim = fed.Simulation(classifier(), clients(["", ""]), training=fed.LocalTraining(**training),
                         clients_per_round=2, local_update=never)
    with pytest.raises(error, match=needle):
        sim.check()
    with pytest.raises(error, match=needle):
        sim.run()


@pytest.mark.parametrize("strategy,min_clients", [
    (fed.FedAvg(), 3),
    (fed.RobustAggregate(fed.FedAvg(), rule="krum:1"), 1),  # Krum needs 2f + 3 = 5 updates
])
def test_a_round_that_can_never_commit_is_refused_up_front(strategy, min_clients):
    sim = fed.Simulation(classifier(), clients(["", "", "", ""]), strategy, clients_per_round=2,
                         min_clients=min_clients)
    with pytest.raises(InputValueError, match="every round would fail"):
        sim.check()


def test_a_read_only_out_in_step_is_a_clean_error():
    import npgru

    gru = npgru.GRU(3, 4)
    out = np.zeros((1, 2, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(InputValueError, match="out must be writeable"):
        gru.step(np.zeros((2, 3), np.float32), np.zeros((1, 2, 4), np.float32), out=out)
