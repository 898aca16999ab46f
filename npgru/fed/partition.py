"""Partitioners: split any labelled dataset into federated clients.

Each ``*_partition`` function returns ``{client_id: example indices}`` (sorted indices, ids in a
fixed order); :func:`make_clients` turns such a partition into :class:`ClientData` with a
per-client train/test split, and :func:`partition_summary` describes the result. The schemes
are the standard non-IID benchmarks (Hsu et al. 2019 for Dirichlet label skew, McMahan et al.
2017 for shards, Li et al. 2022 "Federated learning on non-IID data silos" for quantity skew).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._checks import check_positive_int
from ..datasets.base import ClientData, FederatedData


def _ids(num_clients: int) -> list[str]:
    check_positive_int("num_clients", num_clients)
    width = len(str(num_clients - 1))
    return [f"client_{i:0{width}d}" for i in range(num_clients)]


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError("labels must be non-negative class ids")
    return y


def _as_partition(ids: list[str], parts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    return {cid: np.sort(np.asarray(p, dtype=np.int64)) for cid, p in zip(ids, parts, strict=True)}


def iid_partition(num_examples: int, num_clients: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Shuffle and deal the examples into ``num_clients`` near-equal parts."""
    ids = _ids(num_clients)
    if num_examples < num_clients:
        raise ValueError(f"{num_examples} examples cannot give each of {num_clients} clients one")
    order = np.random.default_rng(seed).permutation(num_examples)
    return _as_partition(ids, np.array_split(order, num_clients))


def dirichlet_partition(labels, num_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 1) -> dict[str, np.ndarray]:
    """Label skew: each class is spread over clients with proportions ~ Dirichlet(α·1).

    Small α gives each client few classes; large α approaches IID. Draws are repeated (from
    the same generator) until every client has at least ``min_size`` examples.

    Raises
    ------
    ValueError
        If α ≤ 0, or ``min_size`` cannot be met within 1000 draws.
    """
    y, ids = _labels(labels), _ids(num_clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if len(y) < num_clients * min_size:
        raise ValueError(f"{len(y)} examples cannot give {num_clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in ids]
        for c in classes:
            members = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for k, piece in enumerate(np.split(members, cuts)):
                parts[k].append(piece)
        merged = [np.concatenate(p) for p in parts]
        if min(len(p) for p in merged) >= min_size:
            return _as_partition(ids, merged)
    raise ValueError(
        f"could not give every client {min_size} examples with alpha={alpha}; "
        "raise alpha or lower min_size"
    )


def shard_partition(labels, num_clients: int, classes_per_client: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Pathological label skew: every client holds exactly ``classes_per_client`` classes.

    Classes are dealt round-robin over a random class order (client i gets the classes at
    positions i·k … i·k + k − 1, modulo the number of classes), and each class's examples are
    split evenly among the clients holding it, so every example is used once.

    Raises
    ------
    ValueError
        If k exceeds the number of classes, if ``num_clients·k`` is below it (some class
        would go unused), or if a class has fewer examples than clients holding it.
    """
    y, ids = _labels(labels), _ids(num_clients)
    classes = np.unique(y)
    k = int(classes_per_client)
    if not 1 <= k <= len(classes):
        raise ValueError(f"classes_per_client must lie in [1, {len(classes)}], got {k}")
    if num_clients * k < len(classes):
        raise ValueError(
            f"{num_clients} clients × {k} classes cannot cover all {len(classes)} classes"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for i in range(num_clients):
        for j in range(k):
            holders[int(order[(i * k + j) % len(classes)])].append(i)
    parts: list[list[np.ndarray]] = [[] for _ in ids]
    for c, owners in holders.items():
        members = rng.permutation(np.flatnonzero(y == c))
        if len(members) < len(owners):
            raise ValueError(f"class {c} has {len(members)} examples for {len(owners)} clients")
        for owner, piece in zip(owners, np.array_split(members, len(owners)), strict=True):
            parts[owner].append(piece)
    return _as_partition(ids, [np.concatenate(p) for p in parts])


def quantity_skew_partition(num_examples: int, num_clients: int, alpha: float,
                            seed: int = 0) -> dict[str, np.ndarray]:
    """Quantity skew: IID content, client sizes ∝ Dirichlet(α·1) (each at least one example)."""
    ids = _ids(num_clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if num_examples < num_clients:
        raise ValueError(f"{num_examples} examples cannot give each of {num_clients} clients one")
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(num_clients, float(alpha)))
    # One example each first, the rest by the shares: nobody is left empty.
    extra = np.floor(shares * (num_examples - num_clients)).astype(np.int64)
    extra[np.argsort(-shares)[: num_examples - num_clients - extra.sum()]] += 1
    cuts = np.cumsum(1 + extra)[:-1]
    return _as_partition(ids, np.split(rng.permutation(num_examples), cuts))


def natural_partition(client_ids) -> dict[str, np.ndarray]:
    """One client per distinct id in ``client_ids`` (one id per example), ids kept as given.

    Clients appear in order of first occurrence.
    """
    raw = np.asarray(client_ids)
    if raw.ndim != 1 or len(raw) == 0:
        raise ValueError("client_ids must be a non-empty 1-D sequence, one id per example")
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    out = {}
    for u in np.argsort(first):
        out[str(raw[first[u]])] = np.flatnonzero(inverse == u)
    return out


def make_clients(x, y, partition: Mapping[str, np.ndarray], *, lengths=None,
                 test_fraction: float = 0.2, seed: int = 0, task: str = "classification",
                 meta: dict | None = None) -> FederatedData:
    """Build :class:`FederatedData` from a partition, splitting each client train/test.

    Parameters
    ----------
    x, y : ndarray
        All examples (first axis indexes examples).
    partition : mapping of client id to indices
        From one of the ``*_partition`` functions.
    lengths : ndarray, optional
        Per-example sequence lengths.
    test_fraction : float, default 0.2
        Share of each client's examples held out as its test split (rounded down).
    seed : int, default 0
        Seeds the per-client train/test shuffles.
    task, meta
        Passed to :class:`FederatedData`.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction!r}")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or (lengths is not None and len(lengths) != len(x)):
        raise ValueError("x, y (and lengths) must have the same number of examples")
    rng = np.random.default_rng(seed)
    clients = []
    for cid, idx in partition.items():
        idx = rng.permutation(np.asarray(idx))
        n_test = int(test_fraction * len(idx))
        tr, te = np.sort(idx[n_test:]), np.sort(idx[:n_test])
        lt = None if lengths is None else np.asarray(lengths)[tr]
        le = None if lengths is None else np.asarray(lengths)[te]
        clients.append(ClientData(cid, x[tr], y[tr], x[te], y[te], lt, le))
    return FederatedData(clients, task, dict(meta or {}))


def partition_summary(data: FederatedData | Sequence[ClientData],
                      num_classes: int | None = None) -> dict:
    """Sizes and label histograms per client (histograms only for integer labels).

    Returns
    -------
    dict
        ``{"num_clients", "sizes": {"min", "median", "max", "mean"}, "clients": {id: {"train",
        "test", "labels"}}}`` where ``labels`` counts every training label (all positions for
        sequence targets), JSON-serialisable.
    """
    clients = data.clients if isinstance(data, FederatedData) else list(data)
    if num_classes is None:
        ints = [c.y_train for c in clients if c.y_train.dtype.kind in "iu" and c.y_train.size]
        num_classes = int(max(int(y.max()) for y in ints)) + 1 if ints else None
    per_client = {}
    for c in clients:
        entry = {"train": c.num_train, "test": c.num_test}
        if num_classes is not None and c.y_train.dtype.kind in "iu":
            entry["labels"] = np.bincount(c.y_train.ravel(), minlength=num_classes).tolist()
        per_client[c.client_id] = entry
    sizes = np.array([c.num_train for c in clients])
    return {
        "num_clients": len(clients),
        "sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                  "max": int(sizes.max()), "mean": float(sizes.mean())},
        "clients": per_client,
    }
