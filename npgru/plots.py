"""Learning curves as a PNG: loss and accuracy per round (or epoch), train and test.

Matplotlib is optional (``pip install "npgru[plots]"``) and imported here only, so
``import npgru`` never pays for it. The figure is drawn with the object-oriented API on its own
Agg canvas: it works on a machine with no screen and never changes matplotlib's global backend
(a notebook's next inline plot still shows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ._atomic import write_atomic

# (record key, label, line style) for each panel; a series is drawn if any record has it.
PANELS = {
    "loss": (("train_loss", "train", "-"), ("test_loss", "test", "--")),
    "accuracy": (("train_accuracy", "train", "-"), ("test_accuracy", "test", "--")),
    "privacy ε": (("epsilon", "ε", "-"),),
    "MB up / down": (("bytes_up", "up", "-"), ("bytes_down", "down", "--")),
    "clients": (("clients_ok", "ok", "-"), ("clients_dropped", "dropped", "--")),
}


def plotting_available() -> bool:
    """Whether matplotlib can be imported, i.e. whether :func:`plot_curves` can draw."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _series(records: Sequence[dict], key: str, x: str) -> tuple[list, list]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, list):  # e.g. clients_dropped as a list of reasons
            v = len(v)
        if isinstance(v, (int, float)) and v == v:  # skip None and NaN
            xs.append(r[x])
            ys.append(v / 1e6 if key.startswith("bytes") else v)
    return xs, ys


def plot_curves(records: Sequence[dict], path: str | os.PathLike, x: str = "round",
                title: str = "") -> None:
    """Plot every series present in ``records`` (one dict per round) and save a PNG.

    Parameters
    ----------
    records : sequence of dict
        Each has ``x`` and any of ``train_loss``, ``test_loss``, ``train_accuracy``,
        ``test_accuracy``, ``epsilon``, ``bytes_up``, ``bytes_down``, ``clients_ok``,
        ``clients_dropped``.
    path : str or path-like
        Where to write the PNG.
    x : str, default "round"
        The key of the horizontal axis.
    title : str
        Figure title.

    Raises
    ------
    ImportError
        Without matplotlib (check :func:`plotting_available` first).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(name, [(s, *_series(records, s[0], x)) for s in series])
              for name, series in PANELS.items()]
    panels = [(name, lines) for name, lines in panels if any(xs for _, xs, _ in lines)]
    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.4))
    FigureCanvasAgg(fig)  # the figure's own canvas: pyplot's backend stays as it was
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels, strict=False):
        for (_, label, style), xs, ys in lines:
            if xs:
                ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, ms=3, label=label)
        ax.set_title(name)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    # atomically: a run killed while plotting leaves the previous curves.png, never a 0-byte one
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
