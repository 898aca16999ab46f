"""The race table: npgru (process, serial) against its PyTorch twin, from their paper.json runs.

    FLAGS="--clients-per-round 10 --lr-decay 0.5 --lr-decay-every 40"   # the 54% run's
    python benchmarks/paper_shakespeare.py paper $FLAGS --out runs/paper_54
    python benchmarks/paper_shakespeare.py paper $FLAGS --executor serial --rounds 12 \\
        --out runs/serial54
    python benchmarks/torch_twin.py $FLAGS --rounds 12 --out runs/twin54
    python benchmarks/twin_race.py runs/paper_54 runs/serial54 runs/twin54 \\
        --out benchmarks/results/twin_race_54

One row per run: its command, seconds per round (training, and evaluation of the test sample),
minutes to 40%, 50% and 54% test accuracy (all positions), and how far its accuracy curve lies
from the first run's (the largest difference over the rounds both ran). Writes
``OUT/twin_race.json``, ``.md`` and a ``.png`` of accuracy against round and against minutes.
Run the contenders one after another on a quiet machine, each in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from npgru._atomic import write_atomic
from npgru.report import load_run, plot_runs

LEVELS = (0.40, 0.50, 0.54)


def _minutes_to(rows: list, level: float) -> float | None:
    return next((r["elapsed_s"] / 60 for r in rows if r["test_accuracy"] >= level), None)


def race_row(path: str, reference: dict | None) -> dict:
    """One run's row; ``reference`` is the first run's ``round → accuracy``."""
    file = path if path.endswith(".json") else os.path.join(path, "paper.json")
    with open(file) as f:
        record = json.load(f)
    rows = record["rounds"]
    acc = {r["round"]: r["test_accuracy"] for r in rows}
    common = sorted(set(acc) & set(reference or acc))
    c = record["config"]
    return {
        "run": os.path.basename(os.path.normpath(path)), "command": record["command"],
        "implementation": c.get("implementation"),
        "executor": c.get("executor", f"one process, {c.get('threads')} threads"),
        "rounds_run": len(rows),
        "seconds_per_round": statistics.median(r["round_s"] for r in rows),
        "round_seconds": {r["round"]: r["round_s"] for r in rows},
        "eval_seconds": statistics.median(r["eval_s"] for r in rows),
        **{f"minutes_to_{round(100 * lv)}": _minutes_to(rows, lv) for lv in LEVELS},
        "max_accuracy_gap": max(abs(acc[t] - (reference or acc)[t]) for t in common),
        "accuracy": acc,
    }


def project(row: dict, reference: dict) -> None:
    """Minutes ``row`` would need to a level it stopped short of, at its seconds per round, to
    the round where ``reference`` (round → accuracy) reached it: curves within noise of each
    other reach a level at the same round, so only the pace differs."""
    for lv in LEVELS:
        key = f"minutes_to_{round(100 * lv)}"
        at = next((t for t in sorted(reference) if reference[t] >= lv), None)
        if row[key] is None and at is not None and at > row["rounds_run"]:
            row["projected_" + key] = at * (row["seconds_per_round"] + row["eval_seconds"]) / 60


def _cell(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _minutes_cell(row: dict, level: float) -> str:
    key = f"minutes_to_{round(100 * level)}"
    if "projected_" + key in row:  # set only where the run stopped short
        return f"(≈{row['projected_' + key]:.0f} projected)"
    return _cell(row[key], ".1f")


def markdown(rows: list) -> str:
    lines = ["# npgru against its PyTorch twin: the paper configuration on Shakespeare", "",
             "Seconds per round are medians (training and aggregation; evaluation apart); "
             "minutes count from the first round's start; the gap is the largest accuracy "
             f"difference from `{rows[0]['run']}` over the rounds both ran. A run stopped before a "
             f"level shows, in brackets, the minutes it would take at its own pace to the round "
             f"where `{rows[0]['run']}` reached it (projected, not measured).", "",
             "| run | implementation | executor | s per round | eval s | min to 40% | "
             "min to 50% | min to 54% | gap | rounds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['implementation']} | {r['executor']} | "
                     f"{r['seconds_per_round']:.1f} | {r['eval_seconds']:.1f} | "
                     + " | ".join(_minutes_cell(r, lv) for lv in LEVELS)
                     + f" | {r['max_accuracy_gap']:.4f} | {r['rounds_run']} |")
    lines += ["", "Commands:", ""] + [f"- {r['run']}: `{r['command']}`" for r in rows]
    first = rows[0]
    lines += ["", f"Pace against {first['run']} over the rounds both ran (the same clients, the "
              "same work; median seconds per round):", ""]
    for r in rows[1:]:
        both = set(r["round_seconds"]) & set(first["round_seconds"])
        mine, theirs = (statistics.median(x["round_seconds"][t] for t in both) for x in (r, first))
        lines.append(f"- {r['run']} takes {mine / theirs:.2f}× the seconds per round of "
                     f"{first['run']} ({mine:.1f} s against {theirs:.1f} s over rounds "
                     f"{min(both)}–{max(both)})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="paper.json runs; the first is the reference of the accuracy gap")
    p.add_argument("--out", default="runs/twin_race", help="directory for twin_race.*")
    args = p.parse_args(argv)
    rows = []
    for path in args.runs:
        rows.append(race_row(path, rows[0]["accuracy"] if rows else None))
    for row in rows[1:]:
        project(row, rows[0]["accuracy"])
    os.makedirs(args.out, exist_ok=True)
    text = json.dumps(rows, indent=1)
    write_atomic(os.path.join(args.out, "twin_race.json"), lambda f: f.write(text.encode()))
    md = markdown(rows)
    write_atomic(os.path.join(args.out, "twin_race.md"), lambda f: f.write(md.encode()))
    plot_runs([load_run(path) for path in args.runs], os.path.join(args.out, "twin_race.png"),
              target=0.54, title="npgru and its PyTorch twin, Shakespeare paper configuration")
    print(md)
    return rows


if __name__ == "__main__":
    main()
