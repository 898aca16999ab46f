"""The simulated clock: how long each client of a round takes, and which ones count.

A client's round is a download of what the server broadcasts, local training, and an upload of
its result (with the compressed bytes when compression is on), each timed on its
:class:`~npgru.fed.devices.DeviceProfile`. A round may set a deadline; a client must also stay
online throughout. Clients that cannot make it are dropped — or, with the ``"partial"``
straggler policy, do the share of their local work that fits (Li et al. 2020, FedProx) — and
with over-selection (Bonawitz et al. 2019) only the first finishers count. The round lasts as
long as its slowest counted client.

Every figure is a function of the client's data size, its profile and the bytes it moves, so the
clock is identical on every executor and across a resume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .devices import DeviceProfile, device_table, training_flops_per_example


@dataclass(frozen=True)
class ClientTime:
    """One client's simulated seconds in a round (from the round's start)."""

    download_s: float
    compute_s: float
    upload_s: float

    @property
    def finish_s(self) -> float:
        """When the server has its result."""
        return self.download_s + self.compute_s + self.upload_s


class SimulatedClock:
    """Times the clients of a round from their devices and work.

    Parameters
    ----------
    profiles : mapping of client id to DeviceProfile
        Every client's device.
    flops_per_example : mapping of client id to float
        Training FLOPs of one example-step of the model on that client's data.
    examples : mapping of client id to int
        Examples a client processes in a round with all its local work done.
    deadline : float, optional
        Simulated seconds a round allows; ``None``: none.
    partial : bool
        Whether a client that cannot finish in time does the share of its work that fits
        (else it is dropped).
    """

    def __init__(self, profiles: Mapping[str, DeviceProfile],
                 flops_per_example: Mapping[str, float], examples: Mapping[str, int],
                 deadline: float | None, partial: bool) -> None:
        self.profiles, self.flops, self.examples = profiles, flops_per_example, examples
        self.deadline, self.partial = deadline, partial

    def compute_s(self, client_id: str, work: float) -> float:
        """Seconds of local training for ``work`` (a fraction) of the client's round."""
        flops = self.examples[client_id] * work * self.flops[client_id]
        return self.profiles[client_id].compute_s(flops)

    def time(self, client_id: str, work: float, bytes_down: int, bytes_up: int) -> ClientTime:
        """The client's download, compute and upload seconds."""
        p = self.profiles[client_id]
        return ClientTime(p.download_s(bytes_down), self.compute_s(client_id, work),
                          p.upload_s(bytes_up))

    def limit(self, client_id: str, start: float) -> float:
        """Seconds the client has from ``start``: the deadline, or less if it goes offline."""
        deadline = math.inf if self.deadline is None else self.deadline
        return min(deadline, self.profiles[client_id].online_for(start))

    def plan(self, client_id: str, start: float, work: float, bytes_down: int,
             bytes_up_budget: int) -> tuple[str | None, float]:
        """(drop reason or None, work fraction) of a client before it trains.

        ``bytes_up_budget`` bounds its upload (the uncompressed result), so that a partial
        client's shortened work fits whatever it ends up sending. A client that would miss even
        with its upload free is dropped here; one that may make it trains and is judged on its
        real upload by :meth:`late`.
        """
        limit = self.limit(client_id, start)
        if limit == 0:
            return f"offline: the device is offline at simulated hour {start / 3600:.2f}", work
        t = self.time(client_id, work, bytes_down, bytes_up_budget)
        if t.finish_s <= limit:
            return None, work
        if self.partial and t.compute_s > 0 and limit > t.download_s + t.upload_s:
            return None, work * (limit - t.download_s - t.upload_s) / t.compute_s
        if t.download_s + t.compute_s >= limit:
            return self._reason(client_id, start, t.download_s + t.compute_s, limit), work
        return None, work

    def late(self, client_id: str, start: float, t: ClientTime) -> str | None:
        """Why a trained client does not count (finished too late), or None."""
        limit = self.limit(client_id, start)
        return None if t.finish_s <= limit else self._reason(client_id, start, t.finish_s, limit)

    def _reason(self, client_id: str, start: float, needs: float, limit: float) -> str:
        if self.deadline is None or self.profiles[client_id].online_for(start) < self.deadline:
            return (f"offline: needs {needs:.1f} simulated s, goes offline after {limit:.1f} s")
        return f"deadline: needs {needs:.1f} simulated s, the round allows {self.deadline:g} s"


def first_finishers(times: Sequence[tuple[str, float]], k: int) -> set[str]:
    """The ids of the ``k`` earliest of ``(client id, finish seconds)``; ties: earlier listed."""
    order = sorted(range(len(times)), key=lambda i: (times[i][1], i))
    return {times[i][0] for i in order[:k]}


def build_clock(num_params: int, clients: Sequence, training, device_profile, seed: int,
                deadline: float | None, partial: bool) -> SimulatedClock:
    """The clock of a simulation: its clients' devices, per-example FLOPs and round's work.

    A client's work in a round is ``epochs × its training examples``, or ``steps × batch``
    with a step budget; one example-step costs
    :func:`~npgru.fed.devices.training_flops_per_example` at its sequences' length.
    """
    from .client import _per_client

    ids = [c.client_id for c in clients]
    flops, examples = {}, {}
    for c in clients:
        steps = c.x_train.shape[1] if c.x_train.ndim >= 2 else 1
        flops[c.client_id] = training_flops_per_example(num_params, steps)
        budget = _per_client(training.steps, c.client_id, None)
        examples[c.client_id] = (int(budget) * min(training.batch_size, c.num_train)
                                 if budget is not None
                                 else int(_per_client(training.epochs, c.client_id, 1)) * c.num_train)
    return SimulatedClock(device_table(device_profile, seed, ids), flops, examples, deadline,
                          partial)
