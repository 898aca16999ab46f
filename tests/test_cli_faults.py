"""The command under faults: a user's error is one line and exit status 2, refused before any
data is loaded; a bug keeps its traceback; Ctrl-C, damaged files and killed writes leave nothing
misleading behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import npgru.cli
from npgru._atomic import remove_stale_temp_files, write_atomic
from npgru.cli import main

from .conftest import require

TINY = ["--max-clients", "3", "--min-chars", "30000", "--hidden-size", "16", "--seq-len", "40",
        "--rounds", "1", "--clients-per-round", "2"]


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if the command gets as far as loading data."""
    def refuse(args):
        raise AssertionError("data was loaded before the flags were checked")

    monkeypatch.setattr(npgru.cli, "load_data", refuse)


def one_line(capsys, code, needle):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    return lines[0]


# -- 5: settings that fail every step, client or round ---------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["train", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["federate", "--clip-norm", "0"], "--clip-norm must be a real number > 0"),
    (["federate", "--clip-norm", "nan"], "--clip-norm must be a real number > 0, got nan"),
    (["train", "--clip-norm", "-1"], "--clip-norm must be a real number > 0"),
    (["federate", "--min-clients", "11"], "a round needs 11 valid updates (--min-clients 11"),
    (["federate", "--aggregator", "krum:2", "--clients-per-round", "5"],
     "a round needs 7 valid updates"),
    (["federate", "--workers", "0"], "--workers must be an integer >= 1"),
    (["federate", "--lr", "inf"], "--lr must be a real number > 0, got inf"),
    (["federate", "--clients-per-round", "1.5"], "--clients-per-round must be a count >= 1"),
])
def test_settings_that_fail_every_round_are_refused_before_loading_data(argv, needle, capsys,
                                                                        no_data, tmp_path):
    one_line(capsys, main([*argv, "--out", str(tmp_path)]), needle)


# -- 7: absurd sizes --------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["generate", "--model", "m.npz", "-n", "100000000000"], "-n 100000000000 would need"),
    (["train", "--hidden-size", "100000000"], "--hidden-size 100000000 with --num-layers 1"),
    (["federate", "--hidden-size", "1000000", "--num-layers", "1000"], "--hidden-size 1000000"),
])
def test_absurd_sizes_are_refused_before_allocating(argv, needle, capsys, no_data):
    line = one_line(capsys, main(argv), needle)
    assert "machine's memory" in line


# -- 13: only refused input is a one-line exit 2; a bug keeps its traceback -------------------
@pytest.mark.parametrize("error", [ValueError, TypeError])
def test_an_internal_error_is_not_disguised_as_a_usage_error(error, monkeypatch, tmp_path):
    def bug(args):
        raise error("an internal bug")

    monkeypatch.setattr(npgru.cli, "load_data", bug)
    with pytest.raises(error, match="an internal bug"):
        main(["train", "--quiet", "--out", str(tmp_path)])


def test_an_internal_error_exits_non_2_with_its_traceback(tmp_path):
    code = ("import sys, npgru.cli as c\n"
            "def bug(args): raise ValueError('an internal bug')\n"
            "c.load_data = bug\n"
            f"sys.exit(c.main(['train', '--quiet', '--out', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode not in (0, 2)
    assert "Traceback" in done.stderr and "ValueError: an internal bug" in done.stderr


def test_a_refused_library_input_is_still_one_line(capsys, tmp_path):
    one_line(capsys, main(["train", "--hidden-size", "0", "--out", str(tmp_path)]),
             "--hidden-size must be an integer >= 1, got 0")


# -- 3, 12: damaged files ---------------------------------------------------------------------
@pytest.mark.parametrize("content,needle", [
    (b"this is not an npz file", "not an .npz (zip) archive"),
    (b"PK\x03\x04" + b"\x00" * 40, "cannot read"),
    (b"\x93NUMPY\x01\x00", "single .npy array"),
])
def test_generate_from_a_damaged_model_file_is_one_line(content, needle, capsys, tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    line = one_line(capsys, main(["generate", "--model", str(path)]), needle)
    assert str(path) in line and "allow_pickle" not in line


@pytest.mark.timeout(300, method="thread")
def test_resume_from_a_damaged_checkpoint_is_one_line(capsys, tmp_path):
    out = str(tmp_path)
    assert main(["federate", *TINY, "--quiet", "--out", out]) == 0
    capsys.readouterr()
    ckpt = tmp_path / "checkpoint.npz"
    content = ckpt.read_bytes()
    for damaged in (content[: len(content) // 3], content[:100] + b"\xff" + content[101:]):
        ckpt.write_bytes(damaged)
        line = one_line(capsys, main(["federate", *TINY, "--rounds", "2", "--quiet", "--resume",
                                      "--out", out]), "checkpoint")
        assert str(ckpt) in line


# -- 11: atomic outputs, stale temporary files --------------------------------------------------
def test_a_plot_that_fails_midway_leaves_the_previous_curves(tmp_path, monkeypatch):
    require("matplotlib")
    from matplotlib.figure import Figure

    from npgru.plots import plot_curves

    path = tmp_path / "curves.png"
    records = [{"round": 1, "train_loss": 1.0}, {"round": 2, "train_loss": 0.5}]
    plot_curves(records, path)
    before = path.read_bytes()

    def killed(self, f, **kw):
        f.write(b"\x89PNG half a file")
        raise KeyboardInterrupt  # a kill mid-write

    monkeypatch.setattr(Figure, "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        plot_curves(records[:1], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["curves.png"]


def test_stale_temporary_files_are_removed_when_a_run_starts(tmp_path):
    for name in (".npgru-abc.tmp", ".npgru-x1y2.tmp"):
        (tmp_path / name).write_bytes(b"left by a killed write")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    from npgru import fed

    from ._fed_common import classification_data, classifier

    sim = fed.Simulation(classifier(), classification_data(num_clients=2), rounds=1,
                         clients_per_round=2, eval_every=0, checkpoint_dir=str(tmp_path))
    sim.run()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "notes.tmp"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_write_error_names_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "model.npz"
    with pytest.raises(FileNotFoundError) as e:
        write_atomic(target, lambda f: f.write(b"x"))
    assert e.value.filename == str(target) and ".npgru-" not in str(e.value)


# -- 8: Ctrl-C with the process executor -------------------------------------------------------
@pytest.mark.timeout(300, method="thread")
def test_ctrl_c_with_the_process_executor_prints_no_worker_traceback(tmp_path):
    argv = [sys.executable, "-m", "npgru", "federate", *TINY, "--rounds", "50",
            "--executor", "process", "--workers", "2", "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for line in proc.stdout:  # the first round line: the workers are busy
            if line.startswith("round"):
                break
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "npgru: interrupted"


def test_numpy_integers_are_accepted_wherever_ints_are(tmp_path):
    from npgru import fed

    from ._fed_common import classification_data, classifier

    sim = fed.Simulation(classifier(), classification_data(num_clients=2), rounds=np.int64(1),
                         clients_per_round=np.int64(2), min_clients=np.int32(1),
                         eval_every=np.int64(0), checkpoint_every=np.int64(1), seed=np.int64(3),
                         training=fed.LocalTraining(batch_size=np.int64(8),
                                                    epochs=np.int16(1)))
    assert sim.run()[0]["status"] == "ok"
