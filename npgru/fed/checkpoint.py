"""Atomic, pickle-free checkpoints of a simulation (.npz).

A checkpoint holds everything a resumed run needs to continue bit-identically: the global
parameters, the last completed round, the strategy's server state, every client's persistent
state (SCAFFOLD's c_i), the history, and metadata to refuse a mismatched resume. Random
streams are pure functions of (seed, round, client), so the seed is the whole RNG state.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._atomic import write_atomic

FORMAT = "npgru.fed.checkpoint/1"


def save_checkpoint(path: str, *, params: np.ndarray, server_round: int, meta: dict,
                    strategy_state: dict, client_states: dict, history: list) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file, fsync, rename).

    A crash at any moment leaves either the previous checkpoint or the new one, never a
    partial file.
    """
    ids = sorted(client_states)
    arrays = {
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
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickles).

    Returns
    -------
    dict
        Keys ``params``, ``round``, ``meta``, ``strategy_state``, ``client_states``, ``history``.

    Raises
    ------
    ValueError
        If the file is not an npgru federated checkpoint or is corrupt.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"cannot read checkpoint {path!r}: {e}") from e
    if files.get("format") is None or str(files["format"]) != FORMAT:
        raise ValueError(f"{path!r} is not an npgru federated checkpoint ({FORMAT})")
    ids = [str(s) for s in files["client_ids"]]
    client_states: dict = {cid: {} for cid in ids}
    strategy_state = {}
    for key, value in files.items():
        if key.startswith("strategy/"):
            strategy_state[key.split("/", 1)[1]] = value
        elif key.startswith("client/"):
            _, i, name = key.split("/", 2)
            client_states[ids[int(i)]][name] = value
    return {
        "params": files["params"],
        "round": int(files["round"]),
        "meta": json.loads(str(files["meta"])),
        "history": json.loads(str(files["history"])),
        "strategy_state": strategy_state,
        "client_states": client_states,
    }
