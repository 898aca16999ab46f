"""Seeded client sampling and per-client random streams.

Every random decision of a round is a pure function of ``(seed, round, client_id, purpose)``:
nothing depends on which clients ran before, on which process runs a client, or on how many
rounds were run in this process. That is what makes the serial and the process executors
bit-identical and a resumed run identical to an uninterrupted one — there is no generator state
to carry across rounds or to checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._checks import InputTypeError, InputValueError

#: How a round's clients are drawn: a fixed-size subset, or each client independently.
SAMPLINGS = ("fixed", "poisson")

# Purposes of a random stream; distinct so that, e.g., drop-out draws never alias training draws.
SAMPLING, TRAINING, SYSTEM, MODEL = 0, 1, 2, 3


def client_key(client_id: str) -> int:
    """A stable 64-bit integer for ``client_id`` (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(client_id.encode(), digest_size=8).digest(), "little")


def make_seed_sequence(seed: int, server_round: int, purpose: int,
                       client_id: str | None = None) -> np.random.SeedSequence:
    """The seed sequence for one purpose in one round (and for one client, if given).

    Parameters
    ----------
    seed : int
        The simulation's seed.
    server_round : int
        The round, from 1.
    purpose : int
        :data:`SAMPLING`, :data:`TRAINING`, :data:`SYSTEM` or :data:`MODEL`.
    client_id : str, optional
        The client whose stream this is; ``None`` for server-side draws.
    """
    key = 0 if client_id is None else client_key(client_id)
    # spawn_key always has three entries so streams of different purposes cannot collide.
    return np.random.SeedSequence(seed, spawn_key=(server_round, purpose, key))


def make_rng(seed: int, server_round: int, purpose: int,
             client_id: str | None = None) -> np.random.Generator:
    """A generator over :func:`make_seed_sequence`'s stream (same parameters)."""
    # default_rng's generator, built directly: default_rng's own checks cost ~20 µs a call
    return np.random.Generator(np.random.PCG64(make_seed_sequence(seed, server_round, purpose,
                                                                  client_id)))


def clients_per_round_count(clients_per_round: int | float, num_clients: int) -> int:
    """Resolve ``clients_per_round`` (a count, or a fraction in (0, 1]) to a count.

    Raises
    ------
    ValueError
        If it is not a positive count ≤ ``num_clients`` or a fraction in (0, 1].
    """
    if isinstance(clients_per_round, bool) or not isinstance(
            clients_per_round, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"clients_per_round must be an int (a count) or a float (a fraction), got "
                        f"{type(clients_per_round).__name__} {clients_per_round!r}")
    if isinstance(clients_per_round, (int, np.integer)):
        k = int(clients_per_round)
        if not 1 <= k <= num_clients:
            raise InputValueError(
                f"clients_per_round must lie in [1, {num_clients}] (the number of clients), got {k}"
            )
        return k
    frac = float(clients_per_round)
    if not 0.0 < frac <= 1.0:
        raise InputValueError(
            f"clients_per_round as a fraction must lie in (0, 1], got {clients_per_round!r}"
        )
    # A fraction always selects at least one client, as in McMahan et al.'s C·K rounded up.
    return max(1, min(num_clients, math.ceil(frac * num_clients - 1e-9)))


def sample_clients(client_ids: Sequence[str], k: int, seed: int, server_round: int) -> list[str]:
    """Choose ``k`` distinct clients for ``server_round``, in the order of ``client_ids``.

    The order of the result is the fixed order in which their updates are aggregated.
    """
    rng = make_rng(seed, server_round, SAMPLING)
    chosen = np.sort(rng.choice(len(client_ids), size=k, replace=False))
    return [client_ids[i] for i in chosen]


def sample_clients_poisson(client_ids: Sequence[str], q: float, seed: int,
                           server_round: int) -> list[str]:
    """Every client joins ``server_round`` independently with probability ``q`` (Poisson).

    The round's size is Binomial(n, q) and may be 0. The result keeps the order of
    ``client_ids`` (the order of aggregation); the draws come from the round's sampling stream.
    """
    u = make_rng(seed, server_round, SAMPLING).random(len(client_ids))
    return [cid for cid, x in zip(client_ids, u, strict=True) if x < q]


@dataclass(frozen=True)
class SamplingPlan:
    """How a run draws its clients each round — what a DP stage needs to account it exactly.

    Attributes
    ----------
    scheme : {"fixed", "poisson"}
        ``"fixed"``: ``size`` distinct clients, uniformly without replacement; ``"poisson"``:
        each client independently with probability ``rate``, ``size`` clients on average.
    size : int
        Clients sampled per round (the expected number for Poisson sampling).
    num_clients : int
        All clients.
    """

    scheme: str
    size: int
    num_clients: int

    @property
    def rate(self) -> float:
        """The sampling rate ``q = size / num_clients``."""
        return self.size / self.num_clients

    def sample(self, client_ids: Sequence[str], seed: int, server_round: int) -> list[str]:
        """The clients of ``server_round``, in the order of ``client_ids``."""
        if self.scheme == "poisson":
            return sample_clients_poisson(client_ids, self.rate, seed, server_round)
        return sample_clients(client_ids, self.size, seed, server_round)
