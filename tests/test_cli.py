"""The `npgru` command as a user meets it: help, one-line errors with exit 2, files written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from npgru.cli import main

TINY = ["--max-clients", "3", "--min-chars", "30000", "--hidden-size", "16", "--seq-len", "40",
        "--quiet"]


def _npgru(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "npgru", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("cmd", [[], ["train"], ["federate"], ["generate"], ["bench"], ["info"]])
def test_help_explains_every_option(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: npgru" in text
    if cmd in (["train"], ["federate"]):
        for flag in ("--dataset", "--hidden-size", "--num-layers", "--batch-size", "--lr",
                     "--seed", "--out"):
            assert flag in text
        assert "(default:" in text


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["train", "--epochs", "many"], "invalid int value: 'many'"),
        (["generate", "--model", "/nonexistent/model.npz"], "model file not found"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--hidden-size", "0", "--quiet", "--out", "OUT"], "hidden_size must be a positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path):
    argv = [str(tmp_path) if a == "OUT" else a for a in argv]
    done = _npgru(*argv)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_generate_refuses_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"this is not an npz file")
    done = _npgru("generate", "--model", str(bad))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_info_reports_backend_and_versions():
    done = _npgru("info")
    assert done.returncode == 0
    assert "npgru" in done.stdout and "backend:" in done.stdout and "numpy" in done.stdout


def test_train_writes_history_model_curves_then_generate(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history] == [1]
    assert {"test_loss", "test_accuracy", "train_loss"} <= set(history[0])
    assert os.path.getsize(out / "curves.png") > 1000
    args = ["generate", "--model", str(out / "model.npz"), "--prompt", "ROMEO:", "-n", "40",
            "--seed", "3"]
    first, second = _npgru(*args), _npgru(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert first.stdout.startswith("ROMEO:") and len(first.stdout.rstrip("\n")) >= 40
