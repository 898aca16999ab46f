"""Runs as researchers compare them: records written while running, and `npgru report`."""

from __future__ import annotations

import json

import pytest

from npgru.cli import main
from npgru.fed.simulation import Simulation
from npgru.report import load_run

from .conftest import require

PNG = b"\x89PNG\r\n\x1a\n"
TINY_FED = ["federate", "--max-clients", "3", "--min-chars", "30000", "--hidden-size", "8",
            "--seq-len", "20", "--clients-per-round", "2", "--batch-size", "16", "--quiet"]


def test_a_killed_federate_run_keeps_the_record_of_every_finished_round(tmp_path, monkeypatch):
    require("matplotlib")
    finish_round = Simulation._round

    def killed_in_round_3(self, t, *args):
        if t == 3:
            raise KeyboardInterrupt  # as Ctrl-C, or a kill the CLI turns into one
        return finish_round(self, t, *args)

    monkeypatch.setattr(Simulation, "_round", killed_in_round_3)
    out = tmp_path / "run"
    assert main([*TINY_FED, "--rounds", "5", "--out", str(out)]) == 130
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history] == [1, 2]
    assert all(r["eval_s"] > 0 and "test_accuracy" in r for r in history)
    assert (out / "curves.png").read_bytes().startswith(PNG)
    assert not (out / "model.npz").exists()  # written at the end only: the run did not end


def _history(path, rounds, wall=30.0, eval_s=30.0, every=1):
    records = [{"round": t, "wall_time": wall, "eval_s": eval_s,
                **({"test_accuracy": 0.1 * t} if t % every == 0 else {})}
               for t in range(1, rounds + 1)]
    path.mkdir()
    (path / "history.json").write_text(json.dumps(records))
    return path


def test_history_time_sums_training_and_evaluation_and_skips_unevaluated_rounds(tmp_path):
    run = load_run(_history(tmp_path / "a", 4, every=2))
    assert run.label == "a"
    assert run.rounds == [2, 4]
    assert run.minutes == [2.0, 4.0]  # (30 s + 30 s) a round, unevaluated rounds included
    assert run.accuracy == pytest.approx([0.2, 0.4])


def test_report_draws_federate_and_paper_runs_in_one_png(tmp_path, capsys):
    require("matplotlib")
    fed_run = _history(tmp_path / "fed", 3)
    paper = tmp_path / "twin"
    paper.mkdir()
    (paper / "paper.json").write_text(json.dumps({
        "command": "python benchmarks/torch_twin.py", "seed": 0, "reached_round": None,
        "rounds": [{"round": 1, "test_accuracy": 0.12, "elapsed_s": 90.0},
                   {"round": 2, "test_accuracy": 0.24, "elapsed_s": 180.0}]}))
    assert load_run(paper).minutes == [1.5, 3.0]
    png = tmp_path / "report.png"
    assert main(["report", str(fed_run), str(paper), "--out", str(png), "--target", "0.54"]) == 0
    assert png.read_bytes().startswith(PNG)
    out = capsys.readouterr().out
    assert "fed: 3 evaluated rounds" in out and "twin: 2 evaluated rounds" in out


@pytest.mark.parametrize("damage, needle", [
    (None, "no such run directory"),
    ("", "holds neither paper.json nor history.json"),
    ('[{"round": 1,', "damaged JSON"),
    ('{"rounds": 3}', "not a run's records"),
    ('[{"round": 1, "wall_time": 1.0}]', "no round has a test_accuracy"),
    ('["round 1"]', "record 0 is not a round"),
    ('{"rounds": [{"round": 1, "test_accuracy": 0.1}]}', "round 1 has no elapsed_s"),
], ids=["missing", "empty-dir", "truncated", "not-records", "no-accuracy", "not-a-round",
        "paper-no-time"])
def test_report_refuses_a_missing_or_damaged_run_in_one_line(tmp_path, capsys, damage, needle):
    good = _history(tmp_path / "good", 2)
    bad = tmp_path / "bad"
    if damage is not None:
        bad.mkdir()
        if damage:
            name = "paper.json" if damage.startswith("{") else "history.json"
            (bad / name).write_text(damage)
    png = tmp_path / "r.png"
    assert main(["report", str(good), str(bad), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and str(bad) in err
    assert not png.exists()


def test_report_help_names_its_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "RUN_DIR" in text and "--out" in text and "--target" in text
