"""Rounds and minutes to a target accuracy for six strategies, each server rate tuned on a grid.

    python benchmarks/strategy_table.py --out benchmarks/results/strategy_table
    python benchmarks/strategy_table.py --strategies fedavg,fedadam --grid fedadam=0.01,0.1 \\
        --out runs/table                                         # a part of it

FedAvg, FedAvgM, FedProx, FedAdam, FedYogi and SCAFFOLD on Shakespeare at a scale where one
run ends well within ``--max-minutes`` (10) on 2 cores — about a minute: the 30 roles with
most text, 10 per round, E = 1, B = 10, client SGD η = 1, an 8-dim embedding into a GRU 1×64,
seed 0, up to 60 rounds, stopping at the target (40% of all next characters right). Each
strategy runs once per value of its tuned setting (:data:`GRID`: the server rate η_s;
FedProx's μ) and the table keeps the value that reaches the target in the fewest rounds (the
highest best accuracy if none does).
Tuning happens on the test sample, as in the FedOpt paper's grids: say so when quoting it.

Every run is ``paper_shakespeare.py paper`` with these flags, so each row comes with the one
command that reproduces it, and writes its own ``OUT/runs/<strategy>-<value>/paper.json``
after every round. The table (``OUT/table.json``, ``.md``, ``.png``) is rewritten after every
run; a run already finished with the same command is not run again, so an interrupted table
is continued by the same command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from npgru._atomic import write_atomic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_shakespeare as paper  # noqa: E402  (a sibling script, not a package)

#: strategy → (the flag tuned, its published grid)
GRID = {
    "fedavg": ("--server-lr", (0.5, 1.0, 2.0)),
    "fedavgm": ("--server-lr", (0.1, 0.3, 1.0, 2.0)),  # momentum 0.9: η_s/(1 − 0.9) effective
    "fedprox": ("--mu", (0.001, 0.01, 0.1)),
    "fedadam": ("--server-lr", (0.003, 0.01, 0.03, 0.1, 0.3)),
    "fedyogi": ("--server-lr", (0.003, 0.01, 0.03, 0.1, 0.3)),
    "scaffold": ("--server-lr", (0.5, 1.0, 2.0)),
}
NAMES = {"fedavg": "FedAvg", "fedavgm": "FedAvgM (β 0.9)", "fedprox": "FedProx",
         "fedadam": "FedAdam (τ 1e-3)", "fedyogi": "FedYogi (τ 1e-3)", "scaffold": "SCAFFOLD"}
#: the scale of the table: paper_shakespeare.py paper's flags
SCALE = ["--max-clients", "30", "--clients-per-round", "10", "--hidden-size", "64",
         "--num-layers", "1", "--local-epochs", "1", "--lr", "1.0", "--rounds", "60",
         "--max-minutes", "10", "--target", "0.40"]


def _grid(text: str) -> tuple[str, tuple[float, ...]]:
    name, _, values = text.partition("=")
    if name not in GRID or not values:
        raise argparse.ArgumentTypeError(f"expected STRATEGY=V1,V2,… with STRATEGY one of "
                                         f"{', '.join(GRID)}; got {text!r}")
    try:
        return name, tuple(float(v) for v in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid values must be numbers, got {values!r}") from None


def _rank(run: dict) -> tuple:
    """Fewest rounds to target first, then fewer minutes; runs that miss it by best accuracy."""
    if run["reached_round"] is not None:
        return (0, run["reached_round"], run["reached_minutes"])
    return (1, -run["best_test_accuracy"], 0.0)


def _finished(path: str, command: str) -> dict | None:
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if record.get("command") == command and record.get("stopped") else None


def summary(strategy: str, flag: str, value: float, record: dict) -> dict:
    rows = record["rounds"]
    return {"strategy": strategy, "name": NAMES[strategy], "tuned": flag.lstrip("-"),
            "value": value, "command": record["command"],
            "reached_round": record["reached_round"], "reached_minutes": record["reached_minutes"],
            "best_test_accuracy": record["best_test_accuracy"],
            "best_test_accuracy_last": record["best_test_accuracy_last"],
            "rounds_run": len(rows), "minutes_run": rows[-1]["elapsed_s"] / 60,
            "seconds_per_round": rows[-1]["elapsed_s"] / len(rows), "stopped": record["stopped"]}


def write_table(out: str, table: dict) -> None:
    best = {}
    for run in table["runs"]:
        if run["strategy"] not in best or _rank(run) < _rank(best[run["strategy"]]):
            best[run["strategy"]] = run
    table["best"] = {s: f"{r['tuned']}={r['value']:g}" for s, r in best.items()}
    text = json.dumps(table, indent=1)
    write_atomic(os.path.join(out, "table.json"), lambda f: f.write(text.encode()))
    md = markdown(table, best)
    write_atomic(os.path.join(out, "table.md"), lambda f: f.write(md.encode()))
    try:
        from npgru.report import load_run, plot_runs

        runs = []
        for s, r in best.items():
            run = load_run(os.path.join(out, "runs", f"{s}-{r['value']:g}"))
            run.label = f"{r['name']}, {r['tuned']} {r['value']:g}"
            runs.append(run)
        plot_runs(runs, os.path.join(out, "table.png"), target=table["target"],
                  title="Shakespeare: each strategy at its best grid value")
    except ImportError:
        pass


def _cell(x, fmt: str) -> str:
    return "not reached" if x is None else format(x, fmt)


def markdown(table: dict, best: dict) -> str:
    t = table["target"]
    lines = [f"# Rounds and minutes to {t:.0%} on Shakespeare, six strategies", "",
             f"`{table['command']}`", "", f"Every run: `{table['scale']}`; test accuracy over "
             f"all positions of {table['test_windows']:,} fixed test windows. Each strategy's "
             "tuned setting ran over the grid below; the best value (fewest rounds to the "
             "target) is shown.", "",
             f"| strategy | tuned | grid | best | rounds to {t:.0%} | minutes to {t:.0%} | best "
             "accuracy (all / last) | s per round |", "|---|---|---|---|---|---|---|---|"]
    for s, r in best.items():
        grid = ", ".join(f"{v:g}" for v in table["grid"][s])
        lines.append(f"| {r['name']} | {r['tuned']} | {grid} | {r['value']:g} | "
                     f"{_cell(r['reached_round'], 'd')} | {_cell(r['reached_minutes'], '.1f')} | "
                     f"{r['best_test_accuracy']:.4f} / {r['best_test_accuracy_last']:.4f} | "
                     f"{r['seconds_per_round']:.1f} |")
    lines += ["", "Every run of the grid, with the command that reproduces it:", "",
              "| strategy | value | rounds to target | minutes | best accuracy | rounds run | "
              "command |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['tuned']} {r['value']:g} | {_cell(r['reached_round'], 'd')} | "
              f"{_cell(r['reached_minutes'], '.1f')} | {r['best_test_accuracy']:.4f} | "
              f"{r['rounds_run']} | `{r['command']}` |" for r in table["runs"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/strategy_table", help="directory for table.* and runs/")
    p.add_argument("--strategies", default=",".join(GRID),
                   help="comma-separated subset of " + ", ".join(GRID))
    p.add_argument("--grid", type=_grid, action="append", default=[], metavar="STRATEGY=V,…",
                   help="replace a strategy's grid (repeatable)")
    p.add_argument("--scale", default=" ".join(SCALE),
                   help="paper_shakespeare.py paper flags of every run (smaller for a check)")
    p.add_argument("--executor", choices=["serial", "process"], default="process")
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in GRID]
    if unknown or not strategies:
        p.error(f"--strategies: expected some of {', '.join(GRID)}, got {args.strategies!r}")
    grid = {s: GRID[s][1] for s in strategies} | {s: v for s, v in args.grid if s in strategies}
    scale = shlex.split(args.scale)
    table = {"command": "python " + shlex.join(["benchmarks/strategy_table.py", *argv]),
             "scale": " ".join(scale), "target": None, "test_windows": None, "grid": grid,
             "runs": []}
    os.makedirs(args.out, exist_ok=True)
    for s in strategies:
        flag = GRID[s][0]
        for value in grid[s]:
            run_dir = os.path.join(args.out, "runs", f"{s}-{value:g}")
            run_argv = ["paper", *scale, "--strategy", s, flag, f"{value:g}",
                        "--executor", args.executor, "--out", run_dir]
            command = "python " + shlex.join(["benchmarks/paper_shakespeare.py", *run_argv])
            record = _finished(os.path.join(run_dir, "paper.json"), command)
            if record is None:
                print(f"== {NAMES[s]}, {flag} {value:g}", flush=True)
                start = time.perf_counter()
                record = paper.main(run_argv).data
                print(f"== {time.perf_counter() - start:.0f} s", flush=True)
            else:
                print(f"== {NAMES[s]}, {flag} {value:g}: finished before, kept", flush=True)
            table["target"] = record["target"]
            table["test_windows"] = record["config"]["test_windows"]
            table["runs"].append(summary(s, flag, value, record))
            write_table(args.out, table)
    with open(os.path.join(args.out, "table.md")) as f:
        print(f.read())
    return table


if __name__ == "__main__":
    main()
