"""Simulated secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning"): the server learns the sum of the clients' vectors and
nothing else, even when clients drop out after masking.

The protocol, as simulated here for one round:

1. *Advertise keys.* Client ``u`` draws a key-agreement secret ``s_u`` and a self-mask seed
   ``b_u``, and publishes ``g^{s_u}``. Any two clients agree on ``s_uv = g^{s_u s_v}``
   (Diffie–Hellman).
2. *Share keys.* ``u`` splits ``s_u`` and ``b_u`` into Shamir shares with threshold ``t`` and
   sends one of each to every other client.
3. *Masked input.* ``u`` encodes its vector ``x_u`` in the ring ``Z_{2^bits}`` and sends
   ``y_u = x_u + PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)``. The pairwise masks cancel in
   the sum over all clients; the self mask keeps ``y_u`` hidden even if ``u``'s pairwise masks
   are later revealed.
4. *Unmask.* Each surviving client returns its share of ``b_u`` for every survivor ``u`` and its
   share of ``s_u`` for every client that dropped after step 2 (never both for one client). From
   ``t`` shares the server rebuilds these secrets, removes the survivors' self masks and the
   dropped clients' dangling pairwise masks, and decodes the sum.

It is a simulation of the protocol's data flow and arithmetic: Diffie–Hellman runs in the
multiplicative group modulo the prime ``2^127 − 1`` and the PRG is NumPy's PCG64, neither of
which is cryptographically secure. The :class:`SecAggServer` object only ever holds public keys,
the running sum of masked vectors and the shares it is sent in step 4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._checks import check_int_range, check_positive_int

#: prime modulus for Diffie–Hellman and Shamir sharing (a Mersenne prime)
PRIME = 2**127 - 1
GENERATOR = 3


# -- fixed-point encoding ------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedPointRing:
    """Fixed-point numbers ``round(x · 2^frac_bits)`` in the ring ``Z_{2^bits}``, two's complement.

    Build it with :meth:`for_sum`, which sizes the ring so a sum cannot wrap around.
    """

    bits: int
    frac_bits: int
    bound: float

    @classmethod
    def for_sum(cls, num_clients: int, bound: float, frac_bits: int = 16) -> FixedPointRing:
        """The smallest ring in which ``num_clients`` values in ``[−bound, bound]`` sum safely.

        Overflow analysis: one value encodes to an integer of magnitude at most
        ``E = ⌊bound · 2^f + 1/2⌋``, a sum of ``K`` of them to at most ``K·E``; the signed
        representation decodes every integer in ``(−2^{b−1}, 2^{b−1})``, so the ring needs
        ``2^b > 2·K·E``. Rounding error of the decoded sum: at most ``K · 2^{−f−1}`` per coordinate.

        Raises
        ------
        ValueError
            If the ring would need more than 64 bits (use fewer ``frac_bits``, a smaller
            ``bound`` or fewer clients), or an argument is out of range.
        """
        check_positive_int("num_clients", num_clients)
        if not (bound > 0 and math.isfinite(bound)):
            raise ValueError(f"bound must be a finite number > 0, got {bound!r}")
        check_int_range("frac_bits", frac_bits, 0)
        largest = math.floor(bound * 2.0**frac_bits + 0.5)
        bits = max(1, (2 * int(num_clients) * largest).bit_length())  # 2^bits > 2·K·E
        if bits > 64:
            raise ValueError(
                f"a sum of {num_clients} values in [-{bound}, {bound}] with {frac_bits} fractional "
                f"bits needs a {bits}-bit ring and could overflow 64 bits: "
                f"lower frac_bits or the clip bound"
            )
        return cls(bits=bits, frac_bits=int(frac_bits), bound=float(bound))

    @property
    def mask(self) -> np.uint64:
        """``2^bits − 1``: reduces a uint64 modulo ``2^bits``."""
        return np.uint64((1 << self.bits) - 1)

    def nbytes(self, size: int) -> int:
        """Bytes of a ``size``-vector of ring elements packed at ``bits`` bits each."""
        return math.ceil(size * self.bits / 8)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``round(x · 2^f) mod 2^bits`` as uint64; refuses values outside ``[−bound, bound]``."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or Inf")
        if x.size and np.abs(x).max() > self.bound:
            raise ValueError(
                f"x has a value of magnitude {np.abs(x).max():.6g} beyond the ring's bound "
                f"{self.bound} (clip updates before secure aggregation)"
            )
        return np.rint(np.ldexp(x, self.frac_bits)).astype(np.int64).view(np.uint64) & self.mask

    def decode(self, s: np.ndarray) -> np.ndarray:
        """Ring elements back to float64, reading ``[2^{b−1}, 2^b)`` as negative."""
        shift = np.uint64(64 - self.bits)
        signed = (np.asarray(s, dtype=np.uint64) << shift).view(np.int64) >> np.int64(shift)
        return np.ldexp(signed.astype(np.float64), -self.frac_bits)


def client_upload_nbytes(size: int, num_clients: int, ring: FixedPointRing, survived: bool = True) -> int:
    """Bytes one client sends in a round of ``num_clients``.

    Its public key and two Shamir shares for each peer (relayed by the server, step 2); then, if
    it ``survived``, the masked vector (``bits`` per coordinate, step 3) and one share per peer when
    unmasking (step 4). Keys and shares are elements of GF(2^127 − 1): 16 bytes each.
    """
    peers = num_clients - 1
    keys = 16 + 2 * 16 * peers
    return keys + ring.nbytes(size) + 16 * peers if survived else keys


def prg(seed: int, size: int, ring: FixedPointRing) -> np.ndarray:
    """``size`` uniform elements of the ring, expanded from ``seed`` (PCG64 raw output)."""
    return np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw(size) & ring.mask


# -- Shamir secret sharing over GF(PRIME) --------------------------------------------------------


def _random_field_element(rng: np.random.Generator) -> int:
    return int.from_bytes(rng.bytes(16), "little") % PRIME


def shamir_split(
    secret: int, xs: Sequence[int], threshold: int, rng: np.random.Generator
) -> dict[int, int]:
    """Shares ``f(x)`` of a random polynomial of degree ``threshold − 1`` with ``f(0) = secret``.

    Any ``threshold`` shares determine ``secret``; fewer reveal nothing about it (Shamir 1979).
    ``xs`` are distinct non-zero evaluation points.
    """
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must lie in [1, {len(xs)}] (the number of shares), got {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points xs must be distinct integers in (0, PRIME)")
    coefs = [secret % PRIME] + [_random_field_element(rng) for _ in range(threshold - 1)]
    return {x: sum(c * pow(x, i, PRIME) for i, c in enumerate(coefs)) % PRIME for x in xs}


def shamir_reconstruct(shares: Mapping[int, int], threshold: int) -> int:
    """The secret ``f(0)`` by Lagrange interpolation from at least ``threshold`` shares ``{x: f(x)}``."""
    if len(shares) < threshold:
        raise ValueError(f"need at least {threshold} shares to reconstruct, got {len(shares)}")
    points = list(shares.items())[:threshold]
    secret = 0
    for j, (xj, yj) in enumerate(points):
        num = den = 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num = num * (-xm) % PRIME
                den = den * (xj - xm) % PRIME
        secret = (secret + yj * num * pow(den, -1, PRIME)) % PRIME
    return secret


# -- the parties ---------------------------------------------------------------------------------


def _share_point(client_id: int) -> int:
    return client_id + 1  # Shamir evaluation point of a client: never 0


def _pair_seed(secret: int, public_key: int) -> int:
    return pow(public_key, secret, PRIME)  # g^{s_u s_v}, the same from either side


class SecAggClient:
    """One client's side of the protocol for one round.

    Parameters
    ----------
    client_id : int
        A non-negative id, unique in the round.
    rng : numpy.random.Generator
        The client's randomness for this round (keys, self-mask seed, share polynomials).
    """

    def __init__(self, client_id: int, rng: np.random.Generator) -> None:
        if client_id < 0:
            raise ValueError(f"client_id must be >= 0, got {client_id}")
        self.client_id = int(client_id)
        self._rng = rng
        self._secret = 1 + _random_field_element(rng) % (PRIME - 2)
        self._self_seed = _random_field_element(rng)
        self.public_key = pow(GENERATOR, self._secret, PRIME)
        self._held: dict[int, tuple[int, int]] = {}  # sender -> (share of s_u, share of b_u)

    def share_secrets(self, peer_ids: Sequence[int], threshold: int) -> dict[int, tuple[int, int]]:
        """Step 2: for each peer (self included), its shares of ``(s_u, b_u)``."""
        xs = [_share_point(v) for v in peer_ids]
        s_shares = shamir_split(self._secret, xs, threshold, self._rng)
        b_shares = shamir_split(self._self_seed, xs, threshold, self._rng)
        return {v: (s_shares[_share_point(v)], b_shares[_share_point(v)]) for v in peer_ids}

    def receive_shares(self, sender: int, shares: tuple[int, int]) -> None:
        """Keep the shares of ``sender``'s secrets addressed to this client."""
        self._held[sender] = shares

    def masked_input(
        self, x: np.ndarray, public_keys: Mapping[int, int], ring: FixedPointRing
    ) -> np.ndarray:
        """Step 3: ``y_u = encode(x_u) + PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)``."""
        y = ring.encode(x) + prg(self._self_seed, x.size, ring)
        for v, pk in public_keys.items():
            if v == self.client_id:
                continue
            p = prg(_pair_seed(self._secret, pk), x.size, ring)
            y = y + p if v > self.client_id else y - p  # uint64 wraps modulo 2^64
        return y & ring.mask

    def unmasking_shares(
        self, survivors: Sequence[int], dropped: Sequence[int]
    ) -> dict[int, tuple[str, int]]:
        """Step 4: the ``b_u`` share of each survivor and the ``s_u`` share of each dropped client.

        Refuses to reveal both kinds for one client — that would let the server strip every mask
        from a vector that did arrive (Bonawitz et al. 2017, §4).
        """
        if set(survivors) & set(dropped):
            raise ValueError("a client cannot be both a survivor and dropped")
        out = {u: ("self", self._held[u][1]) for u in survivors}
        out.update({u: ("pair", self._held[u][0]) for u in dropped})
        return out


class SecAggServer:
    """The server's side: sums masked vectors and, from ``threshold`` shares, unmasks the sum.

    Parameters
    ----------
    ring : FixedPointRing
    threshold : int
        Shares needed to rebuild a secret; more than half the clients (Bonawitz et al. 2017, §4:
        otherwise two disjoint sets of clients could reveal both secrets of one client).
    public_keys : mapping of int to int
        Every participating client's Diffie–Hellman public key (step 1).
    """

    def __init__(self, ring: FixedPointRing, threshold: int, public_keys: Mapping[int, int]) -> None:
        n = len(public_keys)
        if not n // 2 < threshold <= n:
            raise ValueError(f"threshold must lie in ({n // 2}, {n}] for {n} clients, got {threshold}")
        self.ring = ring
        self.threshold = int(threshold)
        self.public_keys = dict(public_keys)
        self.masked_sum: np.ndarray | None = None
        self.received: list[int] = []

    def receive(self, client_id: int, masked: np.ndarray) -> None:
        """Add one masked vector to the running sum (memory: one vector)."""
        if client_id not in self.public_keys or client_id in self.received:
            raise ValueError(f"unexpected or repeated masked input from client {client_id}")
        self.masked_sum = masked.copy() if self.masked_sum is None else (self.masked_sum + masked)
        self.received.append(client_id)

    @property
    def dropped(self) -> list[int]:
        """Clients that shared keys but whose masked input never arrived."""
        return sorted(set(self.public_keys) - set(self.received))

    def unmask(self, responses: Mapping[int, Mapping[int, tuple[str, int]]]) -> np.ndarray:
        """Step 4: remove the masks and decode ``Σ_{u survived} x_u`` (float64).

        Parameters
        ----------
        responses : mapping
            For each responding survivor, its :meth:`SecAggClient.unmasking_shares`.
        """
        if self.masked_sum is None:
            raise ValueError("no masked input arrived: nothing to unmask")
        if len(responses) < self.threshold:
            raise ValueError(
                f"only {len(responses)} clients answered the unmasking request, "
                f"fewer than the threshold {self.threshold}: the sum cannot be recovered"
            )

        def secret_of(u: int, kind: str) -> int:
            shares = {}
            for responder, answer in responses.items():
                got_kind, share = answer[u]
                if got_kind != kind:
                    raise ValueError(f"client {responder} sent the wrong kind of share for {u}")
                shares[_share_point(responder)] = share
            return shamir_reconstruct(shares, self.threshold)

        size, ring = self.masked_sum.size, self.ring
        total = self.masked_sum.copy()
        for u in self.received:
            total -= prg(secret_of(u, "self"), size, ring)
        for u in self.dropped:
            s_u = secret_of(u, "pair")
            for v in self.received:  # v added +PRG(s_uv) if u > v, else −PRG(s_uv)
                p = prg(_pair_seed(s_u, self.public_keys[v]), size, ring)
                total = total - p if u > v else total + p
        return ring.decode(total & ring.mask)


def secure_sum(
    vectors: Mapping[int, np.ndarray],
    bound: float,
    seed: int | Sequence[int],
    frac_bits: int = 16,
    threshold: int | None = None,
    dropped: Sequence[int] = (),
) -> np.ndarray:
    """Run one round of the protocol and return the sum of the surviving clients' vectors.

    Parameters
    ----------
    vectors : mapping of int to ndarray
        Each client's flat vector, entries in ``[−bound, bound]``.
    bound : float
        Per-coordinate bound (an L2 clip ``C`` bounds every coordinate by ``C``).
    seed : int or sequence of int
        Root of every client's randomness (client ``u`` uses ``[*seed, u]``).
    frac_bits : int
        Fixed-point precision: the result is within ``K · 2^{−frac_bits−1}`` of the exact sum.
    threshold : int, optional
        Shamir threshold ``t``; default ``⌊K/2⌋ + 1``.
    dropped : sequence of int
        Clients that drop out after the key sharing, before their masked input arrives.

    Returns
    -------
    ndarray
        float64 sum over the clients not in ``dropped``.
    """
    ids = sorted(vectors)
    if not ids:
        raise ValueError("vectors is empty")
    if not set(dropped) <= set(ids):
        raise ValueError(f"dropped names clients not in vectors: {sorted(set(dropped) - set(ids))}")
    sizes = {np.asarray(vectors[u]).size for u in ids}
    if len(sizes) != 1:
        raise ValueError(f"all vectors must have the same size, got sizes {sorted(sizes)}")
    t = len(ids) // 2 + 1 if threshold is None else threshold
    ring = FixedPointRing.for_sum(len(ids), bound, frac_bits)
    root = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    clients = {u: SecAggClient(u, np.random.default_rng([*root, u])) for u in ids}
    public_keys = {u: c.public_key for u, c in clients.items()}
    server = SecAggServer(ring, t, public_keys)
    for u, c in clients.items():
        for v, shares in c.share_secrets(ids, t).items():
            clients[v].receive_shares(u, shares)
    for u in ids:
        if u not in dropped:
            server.receive(u, clients[u].masked_input(np.asarray(vectors[u]), public_keys, ring))
    survivors, gone = server.received, server.dropped
    return server.unmask({v: clients[v].unmasking_shares(survivors, gone) for v in survivors})
