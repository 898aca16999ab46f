"""McMahan et al. (2017) on shipped Shakespeare: rounds and minutes to 54%, and a strategy comparison.

    python benchmarks/paper_shakespeare.py paper --out runs/paper
    python benchmarks/paper_shakespeare.py paper --rounds 2 --out /tmp/check   # two minutes
    python benchmarks/paper_shakespeare.py eval-cost    # CPU time of one evaluation per batch size
    python benchmarks/paper_shakespeare.py central --out runs/central   # the same model, centrally
    python benchmarks/paper_shakespeare.py compare

``paper``: the paper's configuration with a GRU in place of the LSTM (``--cell lstm`` runs
the paper's LSTM) — natural role split (one client per play and role, LEAF-style), C = 0.1 of
the clients per round, E = 5 local epochs, B = 10, an 8-dim character embedding into a
2-layer GRU of 256 and a linear head,
80-character windows, client SGD with η = 1.47 (gradients clipped to norm 5), FedAvg weighted
by examples, seed 0. Every flag's default is the paper's setting; the others (E, an η
schedule, FedAvgM/FedAdam/FedYogi with a server rate, the executor) make a search a matter of
command lines. It runs until ``--target`` (0.54), ``--rounds`` or ``--max-minutes``.

After every round it rewrites ``OUT/paper.json`` (and ``paper.md``, ``paper.png``) atomically,
so a run can be watched and killed without losing its record::

    {"command": "<this command line>", "seed": 0, "config": {…}, "positions": {…},
     "rounds": [{"round": 1, "test_accuracy": …, "test_accuracy_last": …, "test_loss": …,
                 "train_loss": …, "round_s": …, "eval_s": …, "elapsed_s": …}, …],
     "reached_round": …, "reached_minutes": …, "reached_round_last": …, …}

Accuracy is measured on a fixed, seeded sample of ``--test-windows`` (2,000) pooled test
windows, in batched forward passes of ``--eval-batch`` (256) windows, as ``CharLM.evaluate``
does (one pass of all 2,000 took twice the CPU time; see ``eval-cost``): ``test_accuracy``
counts all 80 positions of each window (every next character, the accuracy ``npgru federate``
reports), ``test_accuracy_last``
only the last position (LEAF's: one prediction per 80-character window). ``--check FILE``
compares this run's rounds with a published ``paper.json`` (exit status 1 if they differ).

``central``: the same model, data, test sample, SGD η, B and clip trained centrally on the
pooled training windows, evaluated after each epoch (``OUT/central.json``, ``.md``): the level
the federated runs can hope to approach.

``compare``: FedAvg, FedProx and FedAdam at a smaller scale (the 30 roles with most text, 10 per
round, GRU 1×64), same seed; writes ``benchmarks/results/strategies.json|md|png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable

import numpy as np

import npgru
from npgru import fed
from npgru._atomic import write_atomic
from npgru.datasets import shakespeare

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 0.54
POSITIONS = {
    "test_accuracy": "all 80 positions of each test window (every next character; as npgru "
                     "federate and McMahan et al.)",
    "test_accuracy_last": "the last position of each test window only (LEAF: one next "
                          "character per 80-character window)",
}


# -- what the npgru run and the PyTorch twin share ---------------------------------------------
def add_paper_arguments(p: argparse.ArgumentParser, out_default: str, *, rounds: bool = True,
                        cells: Iterable[str] | None = None) -> None:
    """The flags of the paper configuration; every default is the paper's setting.

    ``rounds``: with the flags that stop a federated run; ``cells``: the recurrent cells a
    ``--cell`` may name, every registered one by default (the PyTorch twin is a GRU only).
    """
    if rounds:
        g = p.add_argument_group("stopping")
        g.add_argument("--rounds", type=int, default=200, help="at most this many rounds")
        g.add_argument("--max-minutes", type=float, default=45.0,
                       help="stop after the first round that ends past this many minutes")
        g.add_argument("--target", type=float, default=TARGET,
                       help="stop at the first round whose test_accuracy (all positions) "
                            "reaches it")
    g = p.add_argument_group("data and model (smaller values only for quick checks)")
    g.add_argument("--min-chars", type=int, default=0,
                   help="0 keeps every role with at least one train and one test window")
    g.add_argument("--max-clients", type=int, default=None, help="keep the roles with most text")
    g.add_argument("--seq-len", type=int, default=80, help="characters per window")
    g.add_argument("--hidden-size", type=int, default=256)
    g.add_argument("--num-layers", type=int, default=2)
    g.add_argument("--cell", choices=list(npgru.models.LAYERS if cells is None else cells),
                   default="gru",
                   help="recurrent layer: npgru's GRU, or the paper's LSTM")
    g.add_argument("--test-windows", type=int, default=2000,
                   help="size of the fixed, seeded sample of pooled test windows")
    g.add_argument("--eval-batch", type=int, default=256,
                   help="windows per forward pass in evaluation (one pass of all 2,000 costs "
                        "twice the CPU time: its arrays overflow the caches)")
    g = p.add_argument_group("federated training")
    g.add_argument("--clients-per-round", type=float, default=0.1,
                   help="C: a fraction of all clients, or a count if >= 1")
    g.add_argument("--local-epochs", type=int, default=5, help="E")
    g.add_argument("--batch-size", type=int, default=10, help="B")
    g.add_argument("--lr", type=float, default=1.47, help="client SGD learning rate η")
    g.add_argument("--lr-decay", type=float, default=1.0,
                   help="η schedule: round t uses η·DECAY^⌊(t−1)/EVERY⌋ (1 keeps η fixed)")
    g.add_argument("--lr-decay-every", type=int, default=1, help="rounds between two decays")
    g.add_argument("--clip-norm", type=float, default=5.0, help="client gradient-norm clip")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default=out_default, help="directory for paper.json, .md and .png")
    g.add_argument("--check", metavar="PAPER_JSON", default=None,
                   help="compare each round with this published paper.json (exit status 1 "
                        "if an accuracy differs by more than 1e-4)")


def clients_per_round(args) -> int | float:
    return int(args.clients_per_round) if args.clients_per_round >= 1 else args.clients_per_round


def client_lr(args, server_round: int) -> float:
    """η of ``server_round`` under the ``--lr-decay`` schedule."""
    return args.lr * args.lr_decay ** ((server_round - 1) // args.lr_decay_every)


def schedule(args) -> str:
    """The ``--lr-decay`` schedule in a title's words ("" for a fixed η)."""
    if args.lr_decay == 1.0:
        return ""
    return f" ×{args.lr_decay:g} every {args.lr_decay_every} rounds"


def load_setup(args) -> tuple[fed.FederatedData, npgru.CharLM, np.ndarray, np.ndarray]:
    """The clients, the initial model and the fixed test sample ``(x, y)`` of a run."""
    data = shakespeare.load(min_chars=args.min_chars, max_clients=args.max_clients,
                            seq_len=args.seq_len)
    model = npgru.CharLM(len(shakespeare.VOCAB), 8, args.hidden_size,
                         num_layers=args.num_layers, seed=args.seed, cell=args.cell)
    x_test, y_test = data.pooled("test")
    # the sample (and its order, hence the evaluation batches) of the published E = 5 run
    pick = np.random.default_rng(args.seed).choice(len(x_test), min(args.test_windows,
                                                                    len(x_test)), replace=False)
    return data, model, x_test[pick], y_test[pick]


def position_metrics(batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Loss and accuracy over all positions and at the last position, from ``(logits, y)``.

    ``logits`` ``(B, T, V)`` and next-character ids ``y`` ``(B, T)`` of each batch; every
    window is full length (the Shakespeare windows are), so each position weighs the same.
    """
    nll = hits = hits_last = positions = windows = 0.0
    for logits, y in batches:
        z = logits.astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=-1))
        nll += float((log_norm - np.take_along_axis(z, y[..., None], -1)[..., 0]).sum())
        hit = np.argmax(logits, axis=-1) == y
        hits += float(hit.sum())
        hits_last += float(hit[:, -1].sum())
        positions += y.size
        windows += len(y)
    return {"test_loss": nll / positions, "test_accuracy": hits / positions,
            "test_accuracy_last": hits_last / windows}


class Record:
    """The ``paper.json`` of a run (and its ``.md`` and ``.png``), rewritten after each round."""

    def __init__(self, out: str, script: str, args, config: dict, title: str):
        os.makedirs(out, exist_ok=True)
        self.out, self.title, self.target = out, title, args.target
        self.rounds, self.max_minutes = args.rounds, args.max_minutes
        self.data = {
            "command": "python " + shlex.join([script, *args.argv]),
            "seed": args.seed,
            "config": config,
            "positions": POSITIONS,
            "target": args.target,
            "rounds": [],
            "reached_round": None, "reached_minutes": None,
            "reached_round_last": None, "reached_minutes_last": None,
            "stopped": None,  # why the run ended; None while it runs (or if it was killed)
        }

    def add(self, row: dict) -> str | None:
        """Append a round's row and write the files; return why the run stops now, or None."""
        d = self.data
        d["rounds"].append(row)
        for key, suffix in (("test_accuracy", ""), ("test_accuracy_last", "_last")):
            if d[f"reached_round{suffix}"] is None and row[key] >= self.target:
                d[f"reached_round{suffix}"] = row["round"]
                d[f"reached_minutes{suffix}"] = row["elapsed_s"] / 60
        d["best_test_accuracy"] = max(r["test_accuracy"] for r in d["rounds"])
        d["best_test_accuracy_last"] = max(r["test_accuracy_last"] for r in d["rounds"])
        d["stopped"] = self.stop_reason(row)
        self.write()
        return d["stopped"]

    def stop_reason(self, row: dict) -> str | None:
        """Why the run stops after ``row``'s round (target, rounds, time), or None."""
        if self.data["reached_round"] is not None:
            return f"reached {self.target} at round {self.data['reached_round']}"
        if row["round"] >= self.rounds:
            return f"ran --rounds {self.rounds}"
        if row["elapsed_s"] > 60 * self.max_minutes:
            return f"past --max-minutes {self.max_minutes}"
        return None

    def write(self) -> None:
        text = json.dumps(self.data, indent=1)
        write_atomic(os.path.join(self.out, "paper.json"), lambda f: f.write(text.encode()))
        md = self.markdown()
        write_atomic(os.path.join(self.out, "paper.md"), lambda f: f.write(md.encode()))
        try:
            from npgru.report import Run, plot_runs
        except ImportError:
            return
        rows = self.data["rounds"]
        rounds, minutes = [r["round"] for r in rows], [r["elapsed_s"] / 60 for r in rows]
        runs = [Run("all 80 positions", rounds, minutes, [r["test_accuracy"] for r in rows]),
                Run("last position (LEAF)", rounds, minutes,
                    [r["test_accuracy_last"] for r in rows])]
        try:
            plot_runs(runs, os.path.join(self.out, "paper.png"), target=self.target,
                      title=self.title)
        except ImportError:  # no matplotlib: the JSON and the table are the record
            pass

    def markdown(self) -> str:
        d, c = self.data, self.data["config"]

        def reached(suffix: str) -> str:
            r = d[f"reached_round{suffix}"]
            return (f"round {r}, {d[f'reached_minutes{suffix}']:.1f} min" if r is not None
                    else "not reached")

        last = d["rounds"][-1] if d["rounds"] else {"round": 0, "elapsed_s": 0.0}
        lines = [f"# {self.title}", "", f"`{d['command']}`", "",
                 ", ".join(f"{k} {v}" for k, v in c.items()), "",
                 f"Accuracy on {c['test_windows']:,} fixed test windows: *all* = "
                 f"{POSITIONS['test_accuracy']}; *last* = {POSITIONS['test_accuracy_last']}.", "",
                 f"- rounds run: {last['round']} in {last['elapsed_s'] / 60:.1f} min",
                 f"- {self.target:.0%} (all positions): {reached('')}",
                 f"- {self.target:.0%} (last position): {reached('_last')}", "",
                 "| round | accuracy, all | accuracy, last | test loss | train loss | round s "
                 "| eval s | minutes |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['test_accuracy']:.4f} | {r['test_accuracy_last']:.4f} | "
                  f"{r['test_loss']:.4f} | {r['train_loss']:.4f} | {r['round_s']:.1f} | "
                  f"{r['eval_s']:.1f} | {r['elapsed_s'] / 60:.1f} |" for r in d["rounds"]]
        return "\n".join(lines) + "\n"


def cpu_name() -> str:
    """The processor's model name (results differ across CPUs in their last bits and times)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_row(row: dict) -> None:
    print(f"round {row['round']:>3} | train loss {row['train_loss']:.4f} | test acc "
          f"{row['test_accuracy']:.4f} (last {row['test_accuracy_last']:.4f}) | round "
          f"{row['round_s']:.1f}s, eval {row['eval_s']:.1f}s | {row['elapsed_s'] / 60:.1f} min",
          flush=True)


def source_commit() -> str | None:
    """The checkout's commit (``-dirty`` with uncommitted changes), None outside a checkout: a
    record reproduces bit for bit on the code that made it (kernels change the last bits)."""
    try:
        out = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty", "--abbrev=7"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def code_changed_since(commit: str | None) -> bool | None:
    """Does this checkout's ``npgru/`` (uncommitted changes included) differ from ``commit``'s?
    None when git cannot tell (no checkout, an unknown or a ``-dirty`` commit)."""
    if not commit or commit.endswith("-dirty"):
        return None
    try:
        out = subprocess.run(["git", "-C", REPO, "diff", "--quiet", commit, "--", "npgru"],
                             capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: False, 1: True}.get(out.returncode)


def check_against(path: str, record: Record, tol: float = 1e-4) -> bool:
    """Compare this run's accuracies with a published ``paper.json``'s, round by round."""
    with open(path) as f:
        doc = json.load(f)
    published = {r["round"]: r for r in doc["rounds"]}
    made_at, now = doc["config"].get("commit"), record.data["config"].get("commit")
    if made_at != now:
        changed = code_changed_since(made_at)
        verdict = {False: "npgru/ is the same, so every figure should be too",
                   True: "npgru/ changed since, so the last bits may differ",
                   None: "if the kernels changed since, the last bits may differ"}[changed]
        print(f"check: {path} was made at commit {made_at or 'unrecorded'}, this is "
              f"{now or 'not a checkout'}: {verdict}")
    ok = True
    for row in record.data["rounds"]:
        ref = published.get(row["round"])
        if ref is None:
            print(f"check: round {row['round']} is not in {path}")
            return False
        for key in ("test_accuracy", "test_accuracy_last"):
            if key in ref:
                same = abs(row[key] - ref[key]) <= tol
                ok &= same
                print(f"check: round {row['round']} {key} {row[key]:.4f} vs published "
                      f"{ref[key]:.4f}: {'same' if same else 'DIFFERENT'}")
    return ok


def finish_run(args, record: Record) -> None:
    print(record.markdown())
    print(f"record: {os.path.join(args.out, 'paper.json')}")
    if args.check and not check_against(args.check, record):
        sys.exit(1)


# -- the npgru run -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScheduledLR:
    """A local update whose client η follows the ``--lr-decay`` schedule (picklable)."""

    lr: float
    decay: float
    every: int

    def __call__(self, model, data, ins, training):
        lr = self.lr * self.decay ** ((ins.server_round - 1) // self.every)
        return fed.local_update(model, data, ins, dataclasses.replace(training, lr=lr))


def paper(args) -> Record:
    """Run the paper configuration as ``args`` set it; return its record (also on disk)."""
    from npgru.cli import make_strategy

    t0 = time.perf_counter()
    data, model, x_test, y_test = load_setup(args)
    strategy = make_strategy(args)
    training = fed.LocalTraining(optimizer="sgd", lr=args.lr, batch_size=args.batch_size,
                                 epochs=args.local_epochs, clip_norm=args.clip_norm)
    scheduled = args.lr_decay != 1.0
    sim = fed.Simulation(
        model, data, strategy, training=training, rounds=args.rounds,
        clients_per_round=clients_per_round(args), eval_every=0, executor=args.executor,
        workers=args.workers, seed=args.seed,
        local_update=ScheduledLR(args.lr, args.lr_decay, args.lr_decay_every) if scheduled
        else None,
    )
    config = {
        "clients": len(data.clients), "clients_per_round": clients_per_round(args),
        "local_epochs": args.local_epochs, "batch_size": args.batch_size, "lr": args.lr,
        "lr_decay": args.lr_decay, "lr_decay_every": args.lr_decay_every,
        "clip_norm": args.clip_norm, "strategy": strategy.describe(),
        "model": f"CharLM({len(shakespeare.VOCAB)}, embed 8, {args.cell.upper()} {args.num_layers}x"
                 f"{args.hidden_size})", "params": model.num_params,
        "seq_len": args.seq_len, "test_windows": len(x_test), "eval_batch": args.eval_batch,
        "eval_threads": args.eval_threads,
        "implementation": f"npgru {npgru.__version__}", "commit": source_commit(),
        "backend": npgru.get_backend(),
        "executor": args.executor,
        "workers": None if args.executor == "serial" else args.workers or os.cpu_count(),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "setup_s": round(time.perf_counter() - t0, 2),
    }
    name = type(strategy).__name__
    record = Record(args.out, os.path.relpath(os.path.abspath(__file__), REPO), args, config,
                    f"npgru {name}, E={args.local_epochs}, B={args.batch_size}, "
                    f"C={clients_per_round(args)}, η={args.lr}{schedule(args)} on Shakespeare roles")
    print(f"{len(data.clients)} clients, {model.num_params:,} parameters, {name}, "
          f"executor {args.executor}; writing {record.out}/paper.json after every round",
          flush=True)
    start = time.perf_counter()

    class Stop(Exception):
        pass

    def on_round(r: dict) -> None:
        t = time.perf_counter()
        with _blas_threads(args.eval_threads):
            metrics = evaluate_npgru(sim.model_, x_test, y_test, args.eval_batch)
        eval_s = time.perf_counter() - t
        row = {"round": r["round"], **metrics, "train_loss": r["train_loss"],
               "lr": client_lr(args, r["round"]), "round_s": r["wall_time"], "eval_s": eval_s,
               "elapsed_s": time.perf_counter() - start}
        why = record.add(row)
        print_row(row)
        if why is not None:
            print(f"stop: {why}", flush=True)
            raise Stop

    try:
        sim.run(callback=on_round)
    except Stop:
        pass
    finish_run(args, record)
    return record


def evaluate_npgru(model, x: np.ndarray, y: np.ndarray, batch: int) -> dict:
    """:func:`position_metrics` of an npgru CharLM in evaluation mode (no caches kept)."""
    model.eval()

    def batches():
        for s in range(0, len(x), batch):
            yield model.forward(x[s:s + batch]), y[s:s + batch]

    return position_metrics(batches())


def eval_cost(args) -> dict:
    """Seconds to evaluate the test sample per ``--eval-batch`` and BLAS thread count.

    Wall and process CPU time of each pass, alternating over the settings, best of
    ``--repeats`` each. With one thread the CPU time stays steady on a busy machine, where wall
    time does not; with two, the CPU time shows what waiting threads burn.
    """
    _, model, x, y = load_setup(args)
    model.eval()
    evaluate_npgru(model, x[:8], y[:8], 8)  # compile and warm up
    cases = [(b, n) for n in args.threads for b in args.batches]
    seconds: dict[tuple, list[tuple[float, float]]] = {c: [] for c in cases}
    for _ in range(args.repeats):
        for b, n in cases:
            with _blas_threads(n):
                wall, cpu = time.perf_counter(), time.process_time()
                evaluate_npgru(model, x, y, b)
                seconds[b, n].append((time.perf_counter() - wall, time.process_time() - cpu))
    print(f"{len(x)} test windows, GRU {args.num_layers}x{args.hidden_size}; seconds, best of "
          f"{args.repeats} (wall / CPU):")
    for (b, n), s in seconds.items():
        print(f"  --eval-batch {b:>5} --eval-threads {n}: {min(w for w, _ in s):.2f} / "
              f"{min(c for _, c in s):.2f}")
    return seconds


def central(args) -> dict:
    """The paper's model trained centrally on every client's training windows pooled: plain SGD
    with the clients' η (the ``--lr-decay`` schedule counted in epochs), B and clip, evaluated on
    the same test sample after every epoch — the level a federated run can hope to approach."""
    from npgru.optim import SGD
    from npgru.train import fit

    t0 = time.perf_counter()
    data, model, x_test, y_test = load_setup(args)
    x, y = data.pooled("train")
    script = os.path.relpath(os.path.abspath(__file__), REPO)
    result = {"command": "python " + shlex.join([script, *args.argv]),
              "seed": args.seed, "train_windows": len(x), "positions": POSITIONS,
              "config": {"lr": args.lr, "lr_decay": args.lr_decay,
                         "lr_decay_every": args.lr_decay_every, "batch_size": args.batch_size,
                         "clip_norm": args.clip_norm, "cell": args.cell,
                         "hidden_size": args.hidden_size, "num_layers": args.num_layers,
                         "test_windows": len(x_test), "commit": source_commit(),
                         "cpu": cpu_name(), "cpu_count": os.cpu_count()},
              "epochs": []}
    opt = SGD(model, lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        opt.lr = client_lr(args, epoch)
        hist = fit(model, x, y, epochs=1, batch_size=args.batch_size, optimizer=opt,
                   clip_norm=args.clip_norm, seed=epoch)
        row = {"epoch": epoch, "lr": opt.lr, "train_loss": hist["loss"][-1],
               **evaluate_npgru(model, x_test, y_test, args.eval_batch),
               "elapsed_s": time.perf_counter() - t0}
        result["epochs"].append(row)
        print(f"epoch {epoch:>2} | η {opt.lr:.3g} | train loss {row['train_loss']:.4f} | test acc "
              f"{row['test_accuracy']:.4f} (last {row['test_accuracy_last']:.4f}) | test loss "
              f"{row['test_loss']:.4f} | {row['elapsed_s'] / 60:.1f} min", flush=True)
        _write_central(args.out, result)
    return result


def _write_central(out: str, result: dict) -> None:
    os.makedirs(out, exist_ok=True)
    text = json.dumps(result, indent=1)
    write_atomic(os.path.join(out, "central.json"), lambda f: f.write(text.encode()))
    c = result["config"]
    md = [f"# The paper's model trained centrally ({result['train_windows']:,} training windows)",
          "", f"`{result['command']}`", "", ", ".join(f"{k} {v}" for k, v in c.items()), "",
          f"Accuracy on the {c['test_windows']:,} test windows of the federated runs: *all* = "
          f"{POSITIONS['test_accuracy']}; *last* = {POSITIONS['test_accuracy_last']}.", "",
          "| epoch | η | accuracy, all | accuracy, last | test loss | train loss | minutes |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['epoch']} | {r['lr']:.3g} | {r['test_accuracy']:.4f} | "
           f"{r['test_accuracy_last']:.4f} | {r['test_loss']:.4f} | {r['train_loss']:.4f} | "
           f"{r['elapsed_s'] / 60:.1f} |" for r in result["epochs"]]
    text_md = "\n".join(md) + "\n"
    write_atomic(os.path.join(out, "central.md"), lambda f: f.write(text_md.encode()))


def _blas_threads(n: int):
    """BLAS (and OpenMP) pools limited to ``n`` threads inside the block; 0 changes nothing."""
    import contextlib

    if not n:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(n)


def compare(args) -> None:
    data = shakespeare.load(min_chars=10_000, max_clients=30, seq_len=80)
    strategies = {
        "FedAvg": fed.FedAvg(),
        "FedProx (μ=0.01)": fed.FedProx(mu=0.01),
        "FedAdam (η_s=0.01)": fed.FedAdam(server_lr=1e-2),
    }
    table, curves = {}, {}
    for name, strategy in strategies.items():
        model = npgru.CharLM(len(shakespeare.VOCAB), 8, 64, seed=args.seed)
        start = time.perf_counter()
        sim = fed.Simulation(model, data, strategy, rounds=args.rounds, clients_per_round=10,
                             local_epochs=1, batch_size=10, lr=1.0, clip_norm=5.0,
                             federated_eval=False, seed=args.seed)
        history = sim.run()
        curves[name] = history.series("test_accuracy")
        table[name] = {"final_test_accuracy": curves[name][-1],
                       "best_test_accuracy": max(curves[name]),
                       "final_test_loss": history[-1]["test_loss"],
                       "wall_time_s": time.perf_counter() - start}
        print(name, table[name], flush=True)
    md = ["# FedAvg vs FedProx vs FedAdam on Shakespeare (30 roles, 10 per round, GRU 1×64)", "",
          f"{args.rounds} rounds, E=1, B=10, client SGD η=1.0, seed {args.seed}.", "",
          "| strategy | final test accuracy | best | final test loss | time |", "|---|---|---|---|---|"]
    md += [f"| {k} | {v['final_test_accuracy']:.4f} | {v['best_test_accuracy']:.4f} | "
           f"{v['final_test_loss']:.4f} | {v['wall_time_s']:.0f} s |" for k, v in table.items()]
    _write("strategies", {"results": table, "accuracy_per_round": curves}, "\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=name)
    ax.axhline(data.meta["unigram_accuracy"], color="gray", ls=":", label="unigram baseline")
    ax.set(xlabel="round", ylabel="test accuracy", title="Shakespeare, 30 role clients")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "strategies.png"), dpi=110)


def _write(name: str, result: dict, md: str) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(md)
    print(md)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("paper", help="the paper's configuration, until 54%, --rounds or time",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_paper_arguments(q, "runs/paper")
    g = q.add_argument_group("server strategy (FedAvg is the paper's)")
    g.add_argument("--strategy", choices=list(fed.STRATEGIES), default="fedavg")
    g.add_argument("--server-lr", type=float, default=None,
                   help="server rate η_s (default: the strategy's: 1 for FedAvg/FedAvgM, 1e-2 "
                        "for FedAdam/FedYogi/FedAdagrad)")
    g.add_argument("--server-momentum", type=float, default=0.9, help="fedavgm: momentum")
    g.add_argument("--tau", type=float, default=1e-3, help="fedadam/fedyogi: adaptivity τ")
    g.add_argument("--mu", type=float, default=0.01, help="fedprox: proximal μ")
    g = q.add_argument_group("where it runs (results are bit-identical)")
    g.add_argument("--eval-threads", type=int, default=1,
                   help="BLAS threads of the evaluation: 1 (as the clients') gives the same "
                        "bits on any machine; 0 keeps the library's default (see eval-cost)")
    g.add_argument("--executor", choices=["serial", "process"], default="process")
    g.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    q.set_defaults(func=paper)
    q = sub.add_parser("eval-cost", help="CPU time of evaluating the test sample per batch size")
    add_paper_arguments(q, "unused", rounds=False)
    q.add_argument("--batches", type=lambda t: [int(v) for v in t.split(",")],
                   default=[100, 256, 2000], help="comma-separated --eval-batch values")
    q.add_argument("--threads", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2],
                   help="comma-separated BLAS thread counts")
    q.add_argument("--repeats", type=int, default=3)
    q.set_defaults(func=eval_cost)
    q = sub.add_parser("central", help="the paper's model trained centrally, for comparison",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_paper_arguments(q, "runs/central", rounds=False)
    q.add_argument("--epochs", type=int, default=4, help="passes over the pooled training windows")
    q.set_defaults(func=central)
    q = sub.add_parser("compare", help="FedAvg vs FedProx vs FedAdam at a small scale")
    q.add_argument("--rounds", type=int, default=15)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=compare)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, as recorded
    return args.func(args)


if __name__ == "__main__":
    main()
