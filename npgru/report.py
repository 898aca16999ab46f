"""Several runs in one picture: test accuracy against round and against wall-clock minutes.

A run is a directory written by ``npgru federate`` (its ``history.json``) or by the paper
benchmark (its ``paper.json``), or one of those JSON files itself. Both panels share the
accuracy axis, so a faster simulator shows as a curve shifted left in the right-hand panel
while the left-hand panel shows whether the runs learn the same thing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ._atomic import write_atomic
from ._checks import InputValueError

#: the files a run directory may hold, in the order they are looked for
RUN_FILES = ("paper.json", "history.json")


@dataclass
class Run:
    """One run's accuracy curve.

    Attributes
    ----------
    label : str
        How the legend names it (the directory's or the file's name).
    rounds : list of int
        Rounds that were evaluated.
    minutes : list of float
        Wall-clock minutes from the run's start to the end of each of those rounds.
    accuracy : list of float
        Test accuracy after each of those rounds.
    """

    label: str
    rounds: list[int]
    minutes: list[float]
    accuracy: list[float]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _run_file(path: str) -> str:
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise InputValueError(f"{path}: no such run directory or file")
    for name in RUN_FILES:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    raise InputValueError(f"{path}: holds neither {' nor '.join(RUN_FILES)}; is it a run directory?")


def load_run(path: str | os.PathLike) -> Run:
    """Read one run: a directory with ``paper.json`` or ``history.json``, or such a file.

    ``paper.json`` gives ``rounds[i].elapsed_s`` directly; a ``history.json`` gives each
    round's ``wall_time`` (and ``eval_s`` where recorded), summed from the first round on.

    Raises
    ------
    InputValueError
        A ``ValueError`` naming ``path`` and what is wrong: missing, unreadable, not JSON,
        not a run's records, or no evaluated round.
    """
    path = os.fspath(path)
    file = _run_file(path)
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputValueError(f"{file}: damaged JSON (line {e.lineno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputValueError(f"{file}: cannot be read ({e})") from None
    label = os.path.basename(os.path.normpath(path))
    if isinstance(data, dict) and isinstance(data.get("rounds"), list):
        records, paper = data["rounds"], True
    elif isinstance(data, list):
        records, paper = data, False
    else:
        raise InputValueError(f"{file}: not a run's records (expected a list of rounds, or an object "
                         "with a 'rounds' list)")
    run, elapsed = Run(label, [], [], []), 0.0
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not _number(r.get("round")):
            raise InputValueError(f"{file}: record {i} is not a round (a JSON object with 'round')")
        if paper:
            if not _number(r.get("elapsed_s")):
                raise InputValueError(f"{file}: round {r['round']} has no elapsed_s")
            elapsed = float(r["elapsed_s"])
        else:
            elapsed += sum(float(r[k]) for k in ("wall_time", "eval_s") if _number(r.get(k)))
        if _number(r.get("test_accuracy")):
            run.rounds.append(int(r["round"]))
            run.minutes.append(elapsed / 60)
            run.accuracy.append(float(r["test_accuracy"]))
    if not run.rounds:
        raise InputValueError(f"{file}: no round has a test_accuracy yet")
    return run


def plot_runs(runs: Sequence[Run], path: str | os.PathLike, target: float | None = None,
              title: str = "") -> None:
    """Draw test accuracy against round (left) and against minutes (right); save a PNG.

    Parameters
    ----------
    runs : sequence of Run
    path : str or path-like
        The PNG, written atomically (a run watched while it writes never sees half a file).
    target : float, optional
        A horizontal line at this accuracy (e.g. the paper's 0.54).
    title : str
        Figure title.

    Raises
    ------
    ImportError
        Without matplotlib (``pip install "npgru[plots]"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 3.6))
    FigureCanvasAgg(fig)
    by_round, by_time = fig.subplots(1, 2, sharey=True)
    for run in runs:
        marker = "o" if len(run.rounds) < 30 else None
        line, = by_round.plot(run.rounds, run.accuracy, marker=marker, ms=3, label=run.label)
        by_time.plot(run.minutes, run.accuracy, marker=marker, ms=3, color=line.get_color())
    for ax, xlabel in ((by_round, "round"), (by_time, "wall-clock minutes")):
        if target is not None:
            ax.axhline(target, color="gray", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    by_round.xaxis.get_major_locator().set_params(integer=True)  # rounds are whole numbers
    by_round.set_ylabel("test accuracy")
    by_round.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
