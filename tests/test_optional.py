"""Every feature degrades cleanly without its optional package, and output stays clean.

Without matplotlib, numba and tqdm (blocked as in a NumPy-only install) the command runs to
the end and says in one line what it skipped; redirected output gets no progress-bar frames;
plotting leaves matplotlib's global backend alone; a dataset's repr is a summary; help text
states each default once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import npgru
from npgru import _progress
from npgru.cli import main, make_parser
from npgru.datasets import sensors

from .conftest import require

SENSORS = ["federate", "--dataset", "sensors", "--max-clients", "4", "--seq-len", "12",
           "--hidden-size", "8", "--rounds", "2", "--clients-per-round", "2"]

NUMPY_ONLY = """
import sys
for name in ("numba", "matplotlib", "tqdm", "threadpoolctl", "torch"):
    sys.modules[name] = None
from npgru.cli import main
status = main(sys.argv[1:])
heavy = sorted(m for m in ("numba", "matplotlib", "tqdm", "threadpoolctl", "torch")
               if sys.modules.get(m) is not None)
print("loaded:", ",".join(heavy) or "none")
sys.exit(status)
"""


def _run(code_or_module: list[str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NPGRU_BACKEND"}
    return subprocess.run([sys.executable, *code_or_module, *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_federate_runs_to_the_end_with_numpy_only(tmp_path):
    done = _run(["-c", NUMPY_ONLY], *SENSORS, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "curves:  skipped (matplotlib is not installed" in done.stdout
    assert done.stdout.rstrip().endswith("loaded: none")
    assert "round   2" in done.stdout
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2
    assert (tmp_path / "model.npz").exists() and not (tmp_path / "curves.png").exists()
    assert done.stderr == ""


def test_report_without_matplotlib_says_what_to_install(tmp_path):
    done = _run(["-c", NUMPY_ONLY], "report", str(tmp_path), "--out", str(tmp_path / "r.png"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "npgru report: drawing needs matplotlib: pip install 'npgru[plots]'"]


def test_redirected_output_has_no_progress_frames(tmp_path):
    require("tqdm")
    done = _run(["-m", "npgru"], *SENSORS, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr
    assert "round   2" in done.stdout


def _task():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 6, 3)).astype(np.float32), rng.standard_normal((40, 1)).astype(
        np.float32)


def test_fit_draws_no_bar_when_nobody_watches(capsys):
    X, y = _task()
    model = npgru.SequenceRegressor(3, 4, seed=0)
    npgru.fit(model, X, y, 1, 8, npgru.Adam(model), progress=True)  # capsys: not a terminal
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_fit_draws_a_bar_on_a_terminal(capsys, monkeypatch):
    require("tqdm")
    monkeypatch.setattr(_progress, "watched", lambda: True)
    X, y = _task()
    model = npgru.SequenceRegressor(3, 4, seed=0)
    npgru.fit(model, X, y, 1, 8, npgru.Adam(model), progress=True)
    assert "5/5" in capsys.readouterr().err


def test_train_notes_a_missing_tqdm_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_progress, "watched", lambda: True)
    for name in ("tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, name, None)
    argv = ["train", "--dataset", "sensors", "--max-clients", "3", "--seq-len", "12",
            "--hidden-size", "8", "--epochs", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("note: no progress bar (tqdm is not installed)") == 1
    assert (tmp_path / "model.npz").exists()


PLOT = """
import sys
import matplotlib
matplotlib.use("svg")
from npgru.plots import plot_curves
plot_curves([{"round": 1, "test_loss": 2.0}, {"round": 2, "test_loss": 1.5}], sys.argv[1])
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_plot_curves_leaves_the_global_backend_alone(tmp_path):
    require("matplotlib")
    path = tmp_path / "curves.png"
    done = _run(["-c", PLOT], str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dataset_reprs_are_summaries():
    data = sensors.load(num_devices=3, window=12, seed=0)
    text = repr(data)
    n_train = sum(c.num_train for c in data.clients)
    assert text.startswith(f"FederatedData(clients=3, train={n_train}, test=")
    assert len(text) < 300
    client = repr(data.clients[0])
    assert client.startswith(f"ClientData({data.clients[0].client_id!r}, train=")
    assert len(client) < 200


def _commands() -> list[list[str]]:
    """[] and every subcommand the parser has (so a new command is checked too)."""
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [[], *([name] for name in sub.choices)]


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: c[0] if c else "top")
def test_help_states_each_default_once(cmd, capsys):
    with pytest.raises(SystemExit):
        main([*cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert not re.search(r"\(default[^)]*\)\s*\(default", text), text
    assert "(default: None)" not in text and "(default: False)" not in text
    if cmd == ["federate"]:
        assert "(default: CPU count)" in text and "--seed SEED seeds everything" in text
        assert re.search(r"--seed SEED seeds everything[^(]*\(default: 0\)", text)
