"""Seeded sampling and per-client streams: pure functions of (seed, round, client, purpose)."""

from __future__ import annotations

import numpy as np
import pytest

from npgru.fed.sampling import (
    SAMPLING,
    SYSTEM,
    TRAINING,
    client_key,
    clients_per_round_count,
    make_rng,
    sample_clients,
)

IDS = [f"client_{i:03d}" for i in range(200)]


def test_streams_are_fixed_across_processes_and_versions():
    # blake2b, not the per-process salted hash(): these numbers must never change
    assert client_key("client_0") == 15727411009938791503
    np.testing.assert_array_equal(make_rng(0, 1, TRAINING, "client_0").integers(1000, size=3),
                                  [722, 713, 657])


def test_streams_differ_by_round_client_and_purpose():
    draws = {
        (t, cid, purpose): make_rng(5, t, purpose, cid).random()
        for t in (1, 2) for cid in ("a", "b") for purpose in (TRAINING, SYSTEM)
    }
    assert len(set(draws.values())) == len(draws)
    assert make_rng(5, 1, SAMPLING).random() != make_rng(5, 1, TRAINING, "a").random()


def test_sampling_is_seeded_distinct_and_in_list_order():
    a = sample_clients(IDS, 20, seed=3, server_round=4)
    assert a == sample_clients(IDS, 20, seed=3, server_round=4)
    assert len(set(a)) == 20 and a == sorted(a, key=IDS.index)
    assert a != sample_clients(IDS, 20, seed=3, server_round=5)
    assert a != sample_clients(IDS, 20, seed=4, server_round=4)


@pytest.mark.parametrize("value,expected", [(10, 10), (0.1, 20), (0.001, 1), (1.0, 200)])
def test_clients_per_round_count(value, expected):
    assert clients_per_round_count(value, 200) == expected


@pytest.mark.parametrize("value", [0, 201, 0.0, 1.01, True])
def test_clients_per_round_count_rejects(value):
    with pytest.raises((ValueError, TypeError), match="clients_per_round"):
        clients_per_round_count(value, 200)
