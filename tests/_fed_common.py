"""Small federated problems and misbehaving clients shared by the test_fed_* modules."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

import npgru
from npgru import fed


def classification_data(num_clients: int = 8, n: int = 320, seed: int = 0, T: int = 5,
                        D: int = 3, C: int = 3) -> npgru.datasets.FederatedData:
    """A learnable sequence-classification task split Dirichlet(1) over clients."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = (rng.normal(size=(n, T, D)) + y[:, None, None]).astype(np.float32)
    return fed.make_clients(x, y, fed.dirichlet_partition(y, num_clients, alpha=1.0, seed=seed),
                            seed=seed)


def classifier(seed: int = 0, dtype=np.float32, dropout: float = 0.0):
    return npgru.SequenceClassifier(3, 6, 3, num_layers=2 if dropout else 1, dropout=dropout,
                                    dtype=dtype, seed=seed)


def faulty_update(model, data, ins, training):
    """The default local update, except for clients whose id says how to misbehave."""
    cid = ins.client_id
    if cid.endswith("raise"):
        raise RuntimeError("boom")
    if cid.endswith("crash"):  # the process dies: a segfault or the OOM killer
        os.kill(os.getpid(), signal.SIGKILL)
    res = fed.local_update(model, data, ins, training)
    if cid.endswith("nan"):
        res.delta[0] = np.nan
    elif cid.endswith("wrong"):
        res.delta = res.delta[:-1]
    elif cid.endswith("impostor"):
        res.client_id = "c0"
    elif cid.endswith("unpicklable"):
        res.metrics["callback"] = lambda: None
    elif cid.endswith("slow"):
        time.sleep(0.5)
    return res

