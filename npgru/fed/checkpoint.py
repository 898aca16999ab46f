"""Atomic, pickle-free checkpoints of a simulation (.npz).

A checkpoint holds everything a resumed run needs to continue bit-identically: the global
parameters, the last completed round, the strategy's server state, every client's persistent
state (SCAFFOLD's c_i), the history, and metadata to refuse a mismatched resume. Random
streams are pure functions of (seed, round, client), so the seed is the whole RNG state.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .._atomic import write_atomic
from .._checks import InputValueError

FORMAT = "npgru.fed.checkpoint/1"


def save_checkpoint(path: str, *, params: np.ndarray, server_round: int, meta: dict,
                    strategy_state: dict, client_states: dict, history: list) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file, fsync, rename).

    A crash at any moment leaves either the previous checkpoint or the new one, never a
    partial file.
    """
    ids = sorted(client_states)
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
        "history": np.array(json.dumps(history)),
        "round": np.array(server_round, dtype=np.int64),
        "params": params,
        "client_ids": np.array(ids, dtype=str),
    }
    arrays.update({f"strategy/{k}": v for k, v in strategy_state.items()})
    # Client ids may contain any character, so client arrays are keyed by position.
    for i, cid in enumerate(ids):
        arrays.update({f"client/{i}/{k}": v for k, v in client_states[cid].items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickles), checking it.

    Returns
    -------
    dict
        Keys ``params``, ``round``, ``meta``, ``strategy_state``, ``client_states``, ``history``.

    Raises
    ------
    ValueError
        If the file is not an npgru federated checkpoint, is damaged (truncated, bit-flipped)
        or holds values no run can have written (a fractional round, a history shorter than the
        round, non-finite parameters…): an :class:`~npgru._checks.InputValueError` naming the
        file and the entry.
    """
    from ..io import read_npz

    files = read_npz(path, "npgru federated checkpoint")
    try:
        return _parse(files)
    except ValueError as e:
        raise InputValueError(f"checkpoint {path} is damaged or not an npgru checkpoint: {e}") \
            from e


def _text(files: dict, key: str) -> str:
    a = files.get(key)
    if a is None:
        raise ValueError(f"it has no {key!r} entry")
    if a.dtype.kind != "U" or a.shape != ():
        raise ValueError(f"{key!r} must be a text scalar, got dtype {a.dtype} shape {a.shape}")
    return str(a)


def _json(files: dict, key: str, kind: type):
    try:
        value = json.loads(_text(files, key))
    except json.JSONDecodeError as e:
        raise ValueError(f"{key!r} is not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise ValueError(f"{key!r} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _parse(files: dict) -> dict:
    if _text(files, "format") != FORMAT:
        raise ValueError(f"its format is {str(files['format'])!r}, expected {FORMAT!r}")
    meta = _json(files, "meta", dict)
    history = _json(files, "history", list)
    r = files.get("round")
    if r is None or r.shape != () or r.dtype.kind not in "iu" or r < 0:
        raise ValueError(f"'round' must be a non-negative integer scalar, got "
                         f"{'nothing' if r is None else f'{r!r}'}")
    server_round = int(r)
    if len(history) != server_round or any(
            not isinstance(rec, dict) or rec.get("round") != i + 1 for i, rec in enumerate(history)):
        raise ValueError(f"its history must hold one record per round 1..{server_round}, "
                         f"got {len(history)} records")
    params = files.get("params")
    if params is None or params.ndim != 1 or params.dtype.kind != "f":
        raise ValueError("'params' must be a 1-D float array")
    if not np.isfinite(params).all():
        raise ValueError("'params' contains NaN or Inf")
    raw_ids = files.get("client_ids")
    if raw_ids is None or raw_ids.ndim != 1 or (raw_ids.size and raw_ids.dtype.kind != "U"):
        raise ValueError("'client_ids' must be a 1-D text array")
    ids = [str(s) for s in raw_ids]
    client_states: dict = {cid: {} for cid in ids}
    strategy_state = {}
    for key, value in files.items():
        if key in ("format", "meta", "history", "round", "params", "client_ids"):
            continue
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{key!r} must be a numeric array, got dtype {value.dtype}")
        if key.startswith("strategy/"):
            strategy_state[key.split("/", 1)[1]] = value
            continue
        parts = key.split("/", 2)
        if len(parts) != 3 or parts[0] != "client" or not parts[1].isdigit() \
                or int(parts[1]) >= len(ids):
            raise ValueError(f"unexpected entry {key!r}")
        if not np.isfinite(value).all():
            raise ValueError(f"{key!r} contains NaN or Inf")
        client_states[ids[int(parts[1])]][parts[2]] = value
    return {
        "params": params,
        "round": server_round,
        "meta": meta,
        "history": history,
        "strategy_state": strategy_state,
        "client_states": client_states,
    }


def check_restorable(ckpt: dict, params: np.ndarray, strategy_state: dict, path: str) -> None:
    """Refuse a checkpoint whose arrays do not fit the simulation resuming from it.

    ``params`` and ``strategy_state`` are the simulation's own (freshly initialised): the
    checkpoint must hold the same parameter count and the same strategy-state names and shapes.
    """
    def refuse(what: str):
        raise InputValueError(f"checkpoint {path} does not fit this simulation: {what}")

    if ckpt["params"].shape != params.shape:
        refuse(f"'params' has shape {ckpt['params'].shape}, the model {params.shape}")
    saved = ckpt["strategy_state"]
    if set(saved) != set(strategy_state):
        refuse(f"strategy state {sorted(saved)}, expected {sorted(strategy_state)}")
    for name, value in strategy_state.items():
        if np.shape(saved[name]) != np.shape(value):
            refuse(f"strategy state {name!r} has shape {np.shape(saved[name])}, expected "
                   f"{np.shape(value)}")
