"""Atomic file writes: a temporary file beside the target, fsync'd, then ``os.replace``d.

A crash or an error while writing leaves the old file (or none), never half of a new one
(the "nothing lost" convention of the design, docs/design/index.md).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary binary file and move it to ``path`` when it succeeds.

    Parameters
    ----------
    path : str or path-like
    write : callable
        Writes the whole content to the open file it is given.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".npgru-", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
