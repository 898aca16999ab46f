"""Progress bars that appear only where someone watches them.

A bar is drawn with ``\\r`` frames: on a terminal (or in a Jupyter kernel) that is a bar, in a
redirected log (``nohup``, SLURM, CI) it is thousands of junk lines. So a bar is drawn only when
stderr is a terminal or the code runs in an IPython kernel, and only if tqdm is installed;
otherwise :func:`progress_bar` returns a stand-in with the same methods that draws nothing.
"""

from __future__ import annotations

import sys
from typing import Any


def tqdm_available() -> bool:
    """Whether tqdm can be imported (it is optional: ``import npgru`` needs only NumPy)."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def watched() -> bool:
    """Whether a bar would be seen: stderr is a terminal, or this is a Jupyter kernel."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty()) or _in_kernel()


def _in_kernel() -> bool:
    """Whether an IPython kernel is running this code (merely importing ipykernel, as a
    notebook runner does, is not enough: its own stderr is a log)."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


class NoBar:
    """The stand-in: counts like a bar, draws nothing, and prints :meth:`write` lines as is."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def write(self, line: str) -> None:
        print(line, flush=True)

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool = True,
                 leave: bool = True) -> Any:
    """A tqdm bar of ``total`` steps if ``enabled``, watched and tqdm is installed; else a
    :class:`NoBar`. Both have ``n``, ``update``, ``set_postfix``, ``write`` and ``close``."""
    if not (enabled and watched() and tqdm_available()):
        return NoBar()
    from tqdm.auto import tqdm  # imported here: `import npgru` needs only NumPy

    return tqdm(total=total, desc=desc, unit=unit, leave=leave)
