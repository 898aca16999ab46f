"""Partitioners: coverage, the skew each scheme promises, ids, and the summary."""

from __future__ import annotations

import numpy as np
import pytest

from npgru import fed


def labels(n=6000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def assert_exact_cover(parts, n):
    everything = np.concatenate(list(parts.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))


def test_iid_is_balanced_and_covers_everything():
    parts = fed.iid_partition(1003, 10, seed=1)
    assert_exact_cover(parts, 1003)
    assert {len(p) for p in parts.values()} <= {100, 101}
    assert list(parts) == [f"client_{i}" for i in range(10)]


def label_shares(y, parts, classes=10):
    return np.array([np.bincount(y[p], minlength=classes) / len(p) for p in parts.values()])


def test_dirichlet_with_large_alpha_is_close_to_iid():
    y = labels()
    parts = fed.dirichlet_partition(y, 10, alpha=1e4, seed=0)
    assert_exact_cover(parts, len(y))
    global_share = np.bincount(y, minlength=10) / len(y)
    assert np.abs(label_shares(y, parts) - global_share).max() < 0.04
    sizes = [len(p) for p in parts.values()]
    assert max(sizes) < 1.2 * min(sizes)


def test_dirichlet_with_small_alpha_is_skewed():
    y = labels()
    parts = fed.dirichlet_partition(y, 10, alpha=0.1, seed=0)
    assert_exact_cover(parts, len(y))
    assert label_shares(y, parts).max(axis=1).mean() > 0.5  # one class dominates a client


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shards_give_exactly_k_classes(k):
    y = labels()
    parts = fed.shard_partition(y, 20, classes_per_client=k, seed=3)
    assert_exact_cover(parts, len(y))
    assert all(len(np.unique(y[p])) == k for p in parts.values())


def test_quantity_skew_varies_sizes_but_not_labels():
    y = labels()
    parts = fed.quantity_skew_partition(len(y), 10, alpha=0.5, seed=0)
    assert_exact_cover(parts, len(y))
    sizes = np.array([len(p) for p in parts.values()])
    assert sizes.min() >= 1 and sizes.max() > 3 * sizes.min()


def test_natural_keeps_ids_and_membership():
    ids = np.array(["bob", "ann", "bob", "cy", "ann", "bob"])
    parts = fed.natural_partition(ids)
    assert list(parts) == ["bob", "ann", "cy"]
    np.testing.assert_array_equal(parts["bob"], [0, 2, 5])
    np.testing.assert_array_equal(parts["cy"], [3])


def test_make_clients_splits_and_summary_counts():
    y = labels(n=500)
    x = np.arange(500, dtype=np.float32)[:, None, None].repeat(4, axis=1)
    lengths = np.full(500, 4)
    data = fed.make_clients(x, y, fed.natural_partition(y % 5), lengths=lengths,
                            test_fraction=0.2, seed=0)
    assert [c.client_id for c in data.clients] == [str(v) for v in fed.natural_partition(y % 5)]
    for c in data.clients:
        assert c.num_test == int(0.2 * (c.num_train + c.num_test))
        assert set(c.x_train[:, 0, 0]).isdisjoint(c.x_test[:, 0, 0])
        np.testing.assert_array_equal(y[c.x_train[:, 0, 0].astype(int)], c.y_train)
        assert c.lengths_train is not None and len(c.lengths_train) == c.num_train
    summary = fed.partition_summary(data)
    assert summary["num_clients"] == 5
    assert sum(e["train"] + e["test"] for e in summary["clients"].values()) == 500
    for e in summary["clients"].values():
        assert sum(e["labels"]) == e["train"] and len(e["labels"]) == 10


@pytest.mark.parametrize("call,match", [
    (lambda y: fed.dirichlet_partition(y, 10, alpha=0.0), "alpha"),
    (lambda y: fed.shard_partition(y, 2, classes_per_client=3), "cover"),
    (lambda y: fed.shard_partition(y, 10, classes_per_client=11), "classes_per_client"),
    (lambda y: fed.iid_partition(5, 10), "cannot give"),
    (lambda y: fed.dirichlet_partition(y.astype(float), 10, alpha=1.0), "integer"),
    (lambda y: fed.iid_partition(100, 0), "num_clients"),
])
def test_bad_partition_requests_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(labels())
