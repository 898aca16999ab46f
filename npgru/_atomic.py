"""Atomic file writes: a temporary file beside the target, fsync'd, then ``os.replace``d.

A crash or an error while writing leaves the old file (or none), never half of a new one; the
temporary files a killed process leaves behind are removed when the next run starts in that
directory (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

#: what :func:`write_atomic` names its temporary files
TEMP_PREFIX, TEMP_SUFFIX = ".npgru-", ".tmp"


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary binary file and move it to ``path`` when it succeeds.

    Parameters
    ----------
    path : str or path-like
    write : callable
        Writes the whole content to the open file it is given.

    Raises
    ------
    OSError
        Naming ``path`` (not the temporary file) when the file system refuses.
    """
    path = os.fspath(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX,
                                   dir=os.path.dirname(os.path.abspath(path)))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            # the temporary name means nothing to the caller; OSError() picks the subclass
            raise OSError(e.errno, e.strerror, path) from e
        raise


def remove_stale_temp_files(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files that killed writes left in ``directory``; return their names.

    A process killed between creating its temporary file and renaming it leaves the file
    behind. A run calls this on start for its own run directory (one run writes there at a
    time), so they do not pile up.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    stale = sorted(n for n in names if n.startswith(TEMP_PREFIX) and n.endswith(TEMP_SUFFIX))
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
