"""Simulated malicious clients: what an attacker does to its update or to its data.

Attacks, applied to a fixed, seeded set of attacker clients:

- ``signflip``: send ``−Δ`` (a reversed-gradient attack, e.g. Damaskinos et al. 2018);
- ``scale:γ``: send ``γ·Δ`` — model replacement (Bagdasaryan et al. 2020, "How To Backdoor
  Federated Learning", §3.2: γ ≈ K/η_s makes one update replace the global model);
- ``noise:σ``: send a vector drawn from ``N(0, σ² I)`` instead of the update (the Gaussian
  Byzantine worker of Blanchard et al. 2017);
- ``labelflip``: train honestly on labels ``y → C − 1 − y`` (data poisoning; Fang et al. 2020,
  Tolpegin et al. 2020).

The update attacks run on the client through :class:`UpdateAttack`, a client hook; label flipping
changes the attackers' data before the simulation starts (:func:`flip_client_labels`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from .._checks import InputTypeError, InputValueError
from .._registry import Registry
from ..datasets.base import ClientData, FederatedData
from .client import ClientHook, HookContext
from .sampling import make_rng

#: random-stream purpose of attack noise (distinct from sampling.SAMPLING … MODEL)
ATTACK = 4

UPDATE_ATTACKS = ("signflip", "scale", "noise")


def choose_attackers(client_ids: Sequence[str], fraction: float, seed: int) -> frozenset[str]:
    """A fixed set of ``round(fraction · N)`` attackers, chosen by ``seed`` for the whole run."""
    if not 0 <= fraction < 1:
        raise InputValueError(f"attacker fraction must lie in [0, 1), got {fraction!r}")
    ids = sorted(client_ids)
    count = round(fraction * len(ids))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, ATTACK, 0)))
    return frozenset(ids[i] for i in rng.choice(len(ids), size=count, replace=False))


def sign_flip(delta: np.ndarray) -> np.ndarray:
    """``−Δ``."""
    return -delta


def scale_update(delta: np.ndarray, factor: float) -> np.ndarray:
    """``γ·Δ`` (model replacement)."""
    return factor * delta


def gaussian_update(delta: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A vector from ``N(0, σ² I)`` of ``delta``'s shape and dtype, in place of the update."""
    return rng.normal(0.0, sigma, size=delta.shape).astype(delta.dtype, copy=False)


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """``C − 1 − y``: every class id mapped to its mirror."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise InputTypeError(f"label flipping needs integer class ids, got dtype {y.dtype}")
    if num_classes < 2 or (y.size and (y.min() < 0 or y.max() >= num_classes)):
        raise InputValueError(f"labels must lie in [0, {num_classes}) with num_classes >= 2")
    return (num_classes - 1 - y).astype(y.dtype)


def flip_client_labels(
    clients: Sequence[ClientData], attackers: frozenset[str], num_classes: int
) -> list[ClientData]:
    """The clients with the attackers' training labels flipped (test splits stay honest)."""
    return [
        dataclasses.replace(c, y_train=flip_labels(c.y_train, num_classes)) if c.client_id in attackers
        else c
        for c in clients
    ]


def _check_update_attack(kind: str, param: float) -> None:
    if kind not in UPDATE_ATTACKS:
        raise InputValueError(f"update attack must be one of {UPDATE_ATTACKS}, got {kind!r}")
    if kind == "scale" and not math.isfinite(param):
        raise InputValueError(f"scale factor must be finite, got {param!r}")
    if kind == "noise" and not (param >= 0 and math.isfinite(param)):
        raise InputValueError(f"noise sigma must be a finite number >= 0, got {param!r}")


class UpdateAttack(ClientHook):
    """Client hook: the attackers replace their delta by a malicious one.

    Parameters
    ----------
    attackers : frozenset of str
        Ids of the malicious clients (e.g. from :func:`choose_attackers`).
    kind : {"signflip", "scale", "noise"}
    param : float
        ``γ`` for ``scale``, ``σ`` for ``noise``; unused for ``signflip``.
    """

    def __init__(self, attackers: frozenset[str], kind: str, param: float = 1.0) -> None:
        _check_update_attack(kind, param)
        self.attackers = frozenset(attackers)
        self.kind = kind
        self.param = float(param)

    def __repr__(self) -> str:  # sorted: a frozenset's order changes between processes
        return f"UpdateAttack(attackers={sorted(self.attackers)}, kind={self.kind!r}, param={self.param})"

    def on_delta(self, delta: np.ndarray, ctx: HookContext) -> None:
        ins = ctx.ins
        if ins.client_id not in self.attackers:
            return
        if self.kind == "signflip":
            delta[...] = sign_flip(delta)
        elif self.kind == "scale":
            delta[...] = scale_update(delta, self.param)
        else:
            rng = make_rng(ins.seed, ins.server_round, ATTACK, ins.client_id)
            delta[...] = gaussian_update(delta, self.param, rng)


def parse_attack(spec: str) -> tuple[str, float, float]:
    """``(kind, param, fraction)`` from ``npgru federate --attack``'s value.

    ``signflip:FRACTION``, ``scale:FACTOR:FRACTION``, ``noise:SIGMA:FRACTION`` or
    ``labelflip:FRACTION``.
    """
    parts = spec.split(":")
    arity = {"signflip": 2, "labelflip": 2, "scale": 3, "noise": 3}
    if parts[0] not in arity or len(parts) != arity[parts[0]]:
        raise InputValueError(
            "attack must be signflip:FRACTION, scale:FACTOR:FRACTION, noise:SIGMA:FRACTION or "
            f"labelflip:FRACTION, got {spec!r}"
        )
    try:
        numbers = [float(p) for p in parts[1:]]
    except ValueError as e:
        raise InputValueError(f"bad number in attack {spec!r}: {e}") from e
    kind, fraction = parts[0], numbers[-1]
    param = numbers[0] if len(numbers) == 2 else 1.0
    if kind != "labelflip":
        _check_update_attack(kind, param)
    if not 0 <= fraction < 1:
        raise InputValueError(f"attacker fraction must lie in [0, 1), got {fraction!r} in {spec!r}")
    return kind, param, fraction


def _update_attack(kind: str):
    def build(data: FederatedData, attackers: frozenset[str], param: float):
        return data, (UpdateAttack(attackers, kind, param),)

    return build


def _label_flip(data: FederatedData, attackers: frozenset[str], param: float):
    num_classes = data.meta.get("num_classes") or len(data.meta.get("vocab", ()))
    if data.task == "regression" or num_classes < 2:
        raise InputValueError("labelflip needs a classification or next-token task")
    return dataclasses.replace(data, clients=flip_client_labels(data.clients, attackers, num_classes)), ()


#: attack name → ``f(data, attackers, param) -> (data, client hooks)``.
ATTACKS: Registry = Registry("attack")
ATTACKS.register("signflip", _update_attack("signflip"))
ATTACKS.register("scale", _update_attack("scale"))
ATTACKS.register("noise", _update_attack("noise"))
ATTACKS.register("labelflip", _label_flip)


def apply_attack(spec: str, data: FederatedData, seed: int) -> tuple[FederatedData, tuple, float]:
    """Make a seeded fraction of ``data``'s clients attackers as ``spec`` says.

    Returns
    -------
    (data, hooks, fraction)
        The data (labels flipped for ``labelflip``), the client hooks of an update attack
        (wrap the strategy in :class:`~npgru.fed.WithHooks`) and the attacker fraction.
    """
    kind, param, fraction = parse_attack(spec)
    attackers = choose_attackers([c.client_id for c in data.clients], fraction, seed)
    data, hooks = ATTACKS.resolve(kind)(data, attackers, param)
    return data, hooks, fraction
