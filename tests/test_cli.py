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


@pytest.mark.parametrize("cmd", [[], ["train"], ["federate"], ["generate"], ["bench"], ["info"]],
                         ids=["top", "train", "federate", "generate", "bench", "info"])
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


@pytest.mark.parametrize("dataset", ["shakespeare", "sensors"])
def test_unset_flags_take_their_datasets_defaults(dataset):
    from npgru.cli import DATASET_DEFAULTS, fill_dataset_defaults, make_parser

    args = make_parser().parse_args(["federate", "--dataset", dataset])
    fill_dataset_defaults(args)
    for name, by_dataset in DATASET_DEFAULTS.items():
        assert getattr(args, name) == by_dataset[dataset], name
    # a flag given on the command line wins over the dataset's default
    args = make_parser().parse_args(["federate", "--dataset", dataset, "--lr", "0.5"])
    fill_dataset_defaults(args)
    assert args.lr == 0.5
    # train's learning rate (Adam) does not depend on the dataset
    args = make_parser().parse_args(["train", "--dataset", dataset])
    fill_dataset_defaults(args)
    assert args.lr == 3e-3 and args.seq_len == DATASET_DEFAULTS["seq_len"][dataset]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["train", "--epochs", "many"], "invalid int value: 'many'"),
        (["generate", "--model", "/nonexistent/model.npz"], "model file not found"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--hidden-size", "0", "--quiet", "--out", "OUT"], "--hidden-size must be an integer >= 1"),
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


def test_bench_takes_the_packaged_benchmark_options(monkeypatch):
    import npgru.cli as cli

    seen = []
    monkeypatch.setattr(cli, "cmd_bench", lambda args: seen.append((args.quick, args.runs)))
    assert cli.main(["bench", "--quick", "--runs", "3"]) == 0
    assert seen == [(True, 3)]


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


FED = [*TINY, "--clients-per-round", "2", "--batch-size", "16"]


def test_federate_writes_the_promised_files_and_fields(tmp_path):
    out = tmp_path / "fed"
    assert main(["federate", *FED, "--rounds", "2", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history] == [1, 2]
    for r in history:
        assert {"round", "test_accuracy", "test_loss", "clients_ok", "clients_dropped"} <= set(r)
        assert r["clients_ok"] == 2 and r["clients_dropped"] == 0
    assert (out / "model.npz").exists() and os.path.getsize(out / "curves.png") > 1000


def test_federate_resume_equals_an_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["federate", *FED, "--rounds", "3", "--out", str(full)]) == 0
    assert main(["federate", *FED, "--rounds", "2", "--out", str(part)]) == 0
    assert main(["federate", *FED, "--rounds", "3", "--out", str(part), "--resume"]) == 0
    import npgru

    a, b = npgru.load(full / "model.npz"), npgru.load(part / "model.npz")
    assert a.flat_params.tobytes() == b.flat_params.tobytes()
    measured = ("wall_time", "eval_s")  # times, not results
    strip = [{k: v for k, v in r.items() if k not in measured}
             for r in json.loads((full / "history.json").read_text())]
    again = [{k: v for k, v in r.items() if k not in measured}
             for r in json.loads((part / "history.json").read_text())]
    assert strip == again


def test_federate_with_privacy_compression_and_a_robust_aggregator(tmp_path):
    out = tmp_path / "dp"
    assert main(["federate", *FED, "--clients-per-round", "3", "--rounds", "2",
                 "--strategy", "fedadam", "--dp-clip", "1.0", "--dp-noise", "0.8",
                 "--compress", "q8", "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    eps = [r["epsilon"] for r in history]
    assert 0 < eps[0] < eps[1]
    assert history[0]["bytes_up"] > 0
    out = tmp_path / "robust"
    assert main(["federate", *FED, "--clients-per-round", "3", "--rounds", "1", "--federated-eval",
                 "--attack", "signflip:0.3", "--aggregator", "median", "--out", str(out)]) == 0
    record = json.loads((out / "history.json").read_text())[0]
    assert len(record["fed_clients"]) == 3  # every client, not only the sampled ones
    assert 0 <= record["fed_accuracy_worst10"] <= record["fed_accuracy"] <= 1


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--dp-clip", "1", "--dp-noise", "-1"], "--dp-noise must be a real number >= 0"),
        (["--dp-noise", "1"], "--dp-noise needs --dp-clip"),
        (["--compress", "q3"], "q3"),
        (["--aggregator", "krum:1", "--attack", "signflip:0.9"], "--aggregator krum:1"),
        (["--clients-per-round", "3", "--aggregator", "median", "--attack", "scale:5:0.9"], "tolerates"),
        (["--clients-per-round", "1.5"], "--clients-per-round must be a count"),
    ],
)
def test_federate_bad_configurations_exit_2(flags, needle, tmp_path):
    done = _npgru("federate", *FED, "--rounds", "1", "--out", str(tmp_path), *flags)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


def test_federate_and_train_build_the_cell_asked_for(tmp_path):
    from npgru import load

    assert main(["federate", *FED, "--rounds", "1", "--cell", "lstm", "--out",
                 str(tmp_path / "fed")]) == 0
    model = load(tmp_path / "fed" / "model.npz")
    assert model.cell == "lstm" and "lstm.weight_hh_l0" in model.params
    assert main(["train", *TINY, "--epochs", "1", "--cell", "lstm", "--out",
                 str(tmp_path / "train")]) == 0
    assert load(tmp_path / "train" / "model.npz").config()["cell"] == "lstm"
    done = _npgru("federate", *FED, "--rounds", "1", "--cell", "lstm", "--variant", "classic",
                  "--out", str(tmp_path / "bad"))
    assert done.returncode == 2 and "--variant classic is a GRU setting" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
