"""The paper benchmark and its PyTorch twin at tiny sizes: same metrics, same first round."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from npgru import fed

from .conftest import require

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")
# two large roles, both every round, one local epoch of ≈25 steps, a GRU 2×8: a round takes
# a fraction of a second
TINY = ["--max-clients", "2", "--min-chars", "30000", "--seq-len", "40", "--hidden-size", "8",
        "--clients-per-round", "2", "--local-epochs", "1", "--batch-size", "50", "--lr", "0.5",
        "--test-windows", "200"]


def _script(name: str):
    sys.path.insert(0, BENCHMARKS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(BENCHMARKS)


@pytest.fixture(scope="module")
def paper():
    return _script("paper_shakespeare")


def _args(paper, extra=()):
    import argparse

    p = argparse.ArgumentParser()
    paper.add_paper_arguments(p, "unused")
    return p.parse_args([*TINY, *extra])


def test_position_metrics_agree_with_the_models_own_evaluation(paper):
    args = _args(paper)
    _, model, x, y = paper.load_setup(args)
    ours = paper.evaluate_npgru(model, x, y, batch=64)
    theirs = model.evaluate(x, y)
    assert ours["test_accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-12)
    assert ours["test_loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    pred = model.predict(x)
    assert ours["test_accuracy_last"] == pytest.approx(np.mean(pred[:, -1] == y[:, -1]))
    assert paper.evaluate_npgru(model, x, y, batch=len(x)) == pytest.approx(ours, rel=1e-5)


def test_paper_run_writes_its_record_after_each_round_and_checks_itself(paper, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["paper", *TINY, "--rounds", "2", "--executor", "serial", "--out", str(out)]
    paper.main(argv)
    record = json.loads((out / "paper.json").read_text())
    assert record["command"] == "python benchmarks/paper_shakespeare.py " + " ".join(argv)
    assert [r["round"] for r in record["rounds"]] == [1, 2] and record["seed"] == 0
    for r in record["rounds"]:
        assert {"test_accuracy", "test_accuracy_last", "elapsed_s", "eval_s"} <= set(r)
    assert record["reached_round"] is None and record["reached_minutes"] is None
    assert (out / "paper.md").read_text().count("\n| ") == 3  # header and two rounds
    # the same command again, with the process executor: the same figures
    again = tmp_path / "again"
    paper.main([*argv[:-4], "--executor", "process", "--out", str(again),
                "--check", str(out / "paper.json")])
    assert capsys.readouterr().out.count(": same") == 4


def test_the_check_says_whether_npgru_changed_since_the_records_commit(paper):
    first = subprocess.run(["git", "-C", BENCHMARKS, "rev-list", "--max-parents=0", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    assert paper.code_changed_since(first[:7]) is True
    # git cannot tell: an edited checkout, an unknown commit, none recorded
    assert paper.code_changed_since(first[:7] + "-dirty") is None
    assert paper.code_changed_since("0000000") is None
    assert paper.code_changed_since(None) is None


def test_the_target_stops_the_run_and_is_recorded(paper, tmp_path):
    out = tmp_path / "run"
    paper.main(["paper", *TINY, "--rounds", "5", "--target", "0.01", "--executor", "serial",
                "--out", str(out)])
    record = json.loads((out / "paper.json").read_text())
    assert len(record["rounds"]) == 1 and record["reached_round"] == 1
    assert record["reached_minutes"] == pytest.approx(record["rounds"][0]["elapsed_s"] / 60)


def test_cell_flag_runs_the_papers_lstm(paper, tmp_path):
    _, model, _, _ = paper.load_setup(_args(paper, ["--cell", "lstm"]))
    assert model.cell == "lstm" and hasattr(model, "lstm")
    out = tmp_path / "run"
    paper.main(["paper", *TINY, "--cell", "lstm", "--rounds", "1", "--executor", "serial",
                "--out", str(out)])
    record = json.loads((out / "paper.json").read_text())
    assert record["config"]["model"] == "CharLM(80, embed 8, LSTM 2x8)"
    assert record["config"]["params"] == model.num_params
    assert 0 < record["rounds"][0]["test_accuracy"] < 1


def test_central_training_records_every_epoch_and_follows_the_schedule(paper, tmp_path):
    out = tmp_path / "central"
    argv = ["central", *TINY, "--epochs", "2", "--lr-decay", "0.5", "--out", str(out)]
    paper.main(argv)
    result = json.loads((out / "central.json").read_text())
    assert result["command"] == "python benchmarks/paper_shakespeare.py " + " ".join(argv)
    assert [r["epoch"] for r in result["epochs"]] == [1, 2]
    assert [r["lr"] for r in result["epochs"]] == [0.5, 0.25]
    # the same test sample and evaluation as the federated runs, on the trained weights
    first, second = result["epochs"]
    assert second["train_loss"] < first["train_loss"]
    assert 0 < first["test_accuracy"] < 1 and first["test_accuracy_last"] <= 1
    assert (out / "central.md").read_text().count("\n| ") == 3


def test_torch_twins_first_round_equals_npgrus_serial_run(paper):
    torch = require("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # equality, not speed, is tested: no thread pool to wait on
    try:
        _twin_first_round_equals_npgrus(paper, _script("torch_twin"))
    finally:
        torch.set_num_threads(threads)


def _twin_first_round_equals_npgrus(paper, twin_mod):
    args = _args(paper)
    data, model, x, y = paper.load_setup(args)
    twin = twin_mod.twin_of(model)
    before = twin_mod.evaluate(twin, x, y, 64)
    assert before == pytest.approx(paper.evaluate_npgru(model, x, y, 64), rel=1e-5)

    twin_loss = twin_mod.federated_round(twin, data.clients, 1, args)
    training = fed.LocalTraining(optimizer="sgd", lr=args.lr, batch_size=args.batch_size,
                                 epochs=args.local_epochs, clip_norm=args.clip_norm)
    sim = fed.Simulation(model, data, fed.FedAvg(), training=training, rounds=1,
                         clients_per_round=2, eval_every=0, seed=args.seed)
    record = sim.run()[0]
    assert record["num_ok"] == 2
    ours = sim.model_.state_dict()
    theirs = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
    assert set(ours) == set(theirs)
    moved = max(np.abs(ours[k] - model.state_dict()[k]).max() for k in ours)
    assert moved > 1e-2  # the round changed the model: the comparison below means something
    for k in ours:
        np.testing.assert_allclose(theirs[k], ours[k], rtol=1e-4, atol=2e-5, err_msg=k)
    assert twin_loss == pytest.approx(record["train_loss"], rel=1e-4)


def test_strategy_table_tunes_each_strategy_and_continues_where_it_stopped(tmp_path, capsys):
    require("matplotlib")
    table_mod = _script("strategy_table")
    scale = " ".join([*TINY, "--rounds", "1", "--target", "0.9"])
    argv = ["--out", str(tmp_path), "--strategies", "fedavg,fedadam", "--grid", "fedavg=1",
            "--grid", "fedadam=0.01,0.1", "--scale", scale, "--executor", "serial"]
    table = table_mod.main(argv)
    assert [(r["strategy"], r["value"]) for r in table["runs"]] == [
        ("fedavg", 1.0), ("fedadam", 0.01), ("fedadam", 0.1)]
    assert table["grid"] == {"fedavg": (1.0,), "fedadam": (0.01, 0.1)}
    assert set(table["best"]) == {"fedavg", "fedadam"}
    assert all(r["command"].startswith("python benchmarks/paper_shakespeare.py paper ")
               for r in table["runs"])
    saved = json.loads((tmp_path / "table.json").read_text())
    assert saved["best"] == table["best"] and (tmp_path / "table.png").exists()
    capsys.readouterr()
    table_mod.main(argv)  # the same command again: every run is kept, none repeated
    assert capsys.readouterr().out.count("finished before, kept") == 3


def test_twin_race_tables_seconds_minutes_and_the_accuracy_gap(tmp_path):
    require("matplotlib")
    race = _script("twin_race")

    def run(name, accs, seconds):
        d = tmp_path / name
        d.mkdir()
        rows = [{"round": t, "test_accuracy": a, "test_accuracy_last": a, "round_s": seconds,
                 "eval_s": 1.0, "elapsed_s": t * (seconds + 1.0)} for t, a in enumerate(accs, 1)]
        (d / "paper.json").write_text(json.dumps({
            "command": f"python {name}", "config": {"implementation": name, "executor": "x"},
            "rounds": rows}))
        return str(d)

    rows = race.main([run("npgru", [0.3, 0.45, 0.55], 59.0), run("twin", [0.31, 0.44], 119.0),
                      "--out", str(tmp_path / "out")])
    assert [r["minutes_to_40"] for r in rows] == [2.0, 4.0]
    assert [r["minutes_to_54"] for r in rows] == [3.0, None]
    assert rows[1]["max_accuracy_gap"] == pytest.approx(0.01)
    md = (tmp_path / "out" / "twin_race.md").read_text()
    assert "twin takes 2.02× the seconds per round of npgru" in md
    # the twin stopped at round 2; npgru reached 50% and 54% at round 3: 3 × 120 s = 6 min
    assert rows[1]["projected_minutes_to_54"] == pytest.approx(6.0)
    assert "minutes_to_40" in rows[1] and "projected_minutes_to_40" not in rows[1]
    assert "(≈6 projected)" in md


def test_eval_cost_times_each_batch_size_and_thread_count(paper, capsys):
    seconds = paper.main(["eval-cost", *TINY, "--batches", "50,200", "--threads", "1",
                          "--repeats", "1"])
    assert set(seconds) == {(50, 1), (200, 1)}
    assert all(wall > 0 and cpu > 0 for runs in seconds.values() for wall, cpu in runs)
    assert "--eval-batch    50 --eval-threads 1:" in capsys.readouterr().out


def test_torch_twin_without_torch_says_so_and_exits_2(monkeypatch, tmp_path, capsys):
    twin_mod = _script("torch_twin")
    monkeypatch.setattr(twin_mod, "torch", None)
    with pytest.raises(SystemExit) as e:
        twin_mod.main([*TINY, "--rounds", "1", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "needs PyTorch: pip install torch" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
