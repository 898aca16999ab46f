"""Simulated secure aggregation: exact sums through masks, drop-out recovery, what the server sees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npgru.fed.secagg import (
    FixedPointRing,
    SecAggClient,
    SecAggServer,
    client_upload_nbytes,
    secure_sum,
    shamir_reconstruct,
    shamir_split,
)

K, D = 20, 4000


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return {u: rng.uniform(-1, 1, D).astype(np.float32) for u in range(K)}


def chi_square_critical(df: int, z: float = 3.719) -> float:
    """Upper quantile of χ²(df) by Wilson–Hilferty (z = 3.719: p = 1e-4)."""
    c = 2 / (9 * df)
    return df * (1 - c + z * math.sqrt(c)) ** 3


def chi_square_uniform(values: np.ndarray, bins: int) -> float:
    counts = np.bincount(values.astype(np.int64), minlength=bins)
    expected = values.size / bins
    return float(((counts - expected) ** 2 / expected).sum())


def test_secure_sum_equals_plain_sum(vectors):
    total = secure_sum(vectors, bound=1.0, seed=7, frac_bits=16)
    exact = np.sum([v.astype(np.float64) for v in vectors.values()], axis=0)
    assert np.abs(total - exact).max() <= K * 2.0**-17


@pytest.mark.parametrize("dropped", [[0, 3, 5, 7, 11], list(range(9))])  # 25% and 45%
def test_secure_sum_recovers_from_dropouts_after_masking(vectors, dropped):
    total = secure_sum(vectors, bound=1.0, seed=7, frac_bits=20, dropped=dropped)
    exact = np.sum([v.astype(np.float64) for u, v in vectors.items() if u not in dropped], axis=0)
    assert np.abs(total - exact).max() <= K * 2.0**-21


def test_too_many_dropouts_cannot_unmask(vectors):
    with pytest.raises(ValueError, match="fewer than the threshold"):
        secure_sum(vectors, bound=1.0, seed=7, dropped=list(range(10)))  # 10 left, t = 11


def test_secure_sum_is_deterministic(vectors):
    a = secure_sum(vectors, bound=1.0, seed=[3, 1], dropped=[2])
    b = secure_sum(vectors, bound=1.0, seed=[3, 1], dropped=[2])
    np.testing.assert_array_equal(a, b)


def _round(vectors, ids):
    ring = FixedPointRing.for_sum(len(ids), 1.0, 16)
    clients = {u: SecAggClient(u, np.random.default_rng([5, u])) for u in ids}
    keys = {u: c.public_key for u, c in clients.items()}
    t = len(ids) // 2 + 1
    for u, c in clients.items():
        for v, sh in c.share_secrets(ids, t).items():
            clients[v].receive_shares(u, sh)
    return ring, clients, keys, SecAggServer(ring, t, keys)


def test_a_masked_vector_looks_uniform(vectors):
    ids = list(range(K))
    ring, clients, keys, server = _round(vectors, ids)
    x = np.full(50_000, 0.5)  # one constant value: its encoding alone is as far from uniform as can be
    y = clients[0].masked_input(x, keys, ring)
    server.receive(0, y)
    held = server.masked_sum
    assert not np.array_equal(held, ring.encode(x))
    bins = 64
    high = held >> np.uint64(ring.bits - 6)  # top 6 bits of each residue
    low = held & np.uint64(bins - 1)  # bottom 6 bits
    assert chi_square_uniform(high, bins) < chi_square_critical(bins - 1)
    assert chi_square_uniform(low, bins) < chi_square_critical(bins - 1)
    # and the server object holds nothing else but public keys and the masked sum
    assert set(vars(server)) == {"ring", "threshold", "public_keys", "masked_sum", "received"}


def test_masked_vectors_follow_the_uniform_chi_square_law():
    # over many rounds the statistic of a masked constant vector has χ²(63)'s mean, 63 (sd 11.2)
    ring = FixedPointRing.for_sum(6, 1.0, 16)
    stats = []
    for seed in range(40):
        clients = {u: SecAggClient(u, np.random.default_rng([seed, u])) for u in range(6)}
        keys = {u: c.public_key for u, c in clients.items()}
        y = clients[0].masked_input(np.full(8192, 0.5), keys, ring)
        stats.append(chi_square_uniform(y >> np.uint64(ring.bits - 6), 64))
    assert abs(np.mean(stats) - 63) < 4 * 11.2 / math.sqrt(len(stats))


def test_fixed_point_ring_extremes_do_not_wrap():
    ring = FixedPointRing.for_sum(num_clients=7, bound=2.5, frac_bits=12)
    for sign in (1.0, -1.0):
        x = np.full(3, sign * 2.5)
        total = sum(ring.encode(x) for _ in range(7)) & ring.mask
        np.testing.assert_array_equal(ring.decode(total), 7 * x)
    assert ring.nbytes(10) == math.ceil(10 * ring.bits / 8)


def test_upload_bytes():
    ring = FixedPointRing.for_sum(num_clients=5, bound=1.0, frac_bits=16)
    keys = 16 + 2 * 16 * 4  # public key, then shares of two secrets for 4 peers
    assert client_upload_nbytes(10, 5, ring, survived=False) == keys
    assert client_upload_nbytes(10, 5, ring) == keys + math.ceil(10 * ring.bits / 8) + 16 * 4


def test_ring_refuses_overflowing_configurations():
    with pytest.raises(ValueError, match="overflow 64 bits"):
        FixedPointRing.for_sum(num_clients=1000, bound=1e6, frac_bits=40)
    ring = FixedPointRing.for_sum(num_clients=4, bound=1.0)
    with pytest.raises(ValueError, match="beyond the ring's bound"):
        ring.encode(np.array([0.5, -1.5]))
    with pytest.raises(ValueError, match="bound"):
        FixedPointRing.for_sum(4, bound=0.0)
    with pytest.raises(ValueError, match="frac_bits"):
        FixedPointRing.for_sum(4, bound=1.0, frac_bits=-1)


def test_shamir_threshold():
    rng = np.random.default_rng(0)
    secret = 123456789123456789
    shares = shamir_split(secret, xs=list(range(1, 8)), threshold=4, rng=rng)
    assert shamir_reconstruct({x: shares[x] for x in (2, 5, 6, 7)}, 4) == secret
    assert shamir_reconstruct({x: shares[x] for x in (1, 2, 3)}, 3) != secret
    with pytest.raises(ValueError, match="at least 4 shares"):
        shamir_reconstruct({x: shares[x] for x in (1, 2, 3)}, 4)
    with pytest.raises(ValueError, match="threshold"):
        shamir_split(secret, xs=[1, 2], threshold=3, rng=rng)


def test_protocol_rules(vectors):
    ids = list(range(6))
    ring, clients, keys, server = _round(vectors, ids)
    with pytest.raises(ValueError, match="both a survivor and dropped"):
        clients[0].unmasking_shares([1, 2], [2])
    with pytest.raises(ValueError, match="threshold"):
        SecAggServer(ring, 3, keys)  # t must exceed K/2
    server.receive(1, clients[1].masked_input(np.zeros(5), keys, ring))
    with pytest.raises(ValueError, match="repeated"):
        server.receive(1, clients[1].masked_input(np.zeros(5), keys, ring))
    with pytest.raises(ValueError, match="dropped names"):
        secure_sum({0: np.zeros(2), 1: np.zeros(2)}, bound=1.0, seed=0, dropped=[5])
