"""FedBuff: buffered asynchronous aggregation on the simulated clock (Nguyen et al. 2022).

Up to ``max_concurrency`` clients train at once, each from the global model current when it
starts. Whenever one finishes (on the simulated clock of :mod:`npgru.fed.clock`) its update
joins a buffer, weighted by FedBuff's staleness factor ``1 / √(1 + τ)`` — ``τ`` the number of
server updates since it started — and a replacement client starts from the current model.
Every ``K`` arrivals the strategy aggregates the buffer as one round and applies it (so server
optimizers and defence stages work as in synchronous rounds); each applied update is one
history record, with ``staleness`` (mean and max of ``τ`` in the buffer).

Which client starts is drawn, among the idle clients online at that moment, from the stream
``(seed, launch number)``; a client's training uses the stream of its launch number. Ties on the
clock go to the earlier launch. Nothing depends on the executor, and the state between two
updates (the clients in flight with their results) is checkpointed, so a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from dataclasses import dataclass

import numpy as np

from .client import FitIns, FitRes, UnusableResult, check_result
from .sampling import SAMPLING, make_rng

#: launches draw from the sampling stream of round ``launch + this``: apart from the rounds'
ASYNC_LAUNCH_OFFSET = 2**34
#: reserved client-state key prefix under which a checkpoint keeps the clients in flight
STATE_PREFIX = "__fedbuff__/"


@dataclass
class Flight:
    """A client in flight: its launch, start, result and when the server receives it."""

    launch: int
    start_version: int
    start_time: float
    finish_time: float
    res: FitRes
    reason: str | None

    def key(self) -> tuple[float, int]:
        return (self.finish_time, self.launch)


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8).copy()


class FedBuff:
    """The asynchronous loop of one simulation (see the module docstring).

    Parameters
    ----------
    sim : Simulation
        The simulation running it (its clock, commit, client states and settings).
    strategy : Strategy
    executor : Executor
    ids : list of str
        All client ids, in their fixed order.
    buffer : int
        ``K``: arrivals per server update.
    concurrency : int
        Clients in flight at most.
    """

    def __init__(self, sim, strategy, executor, ids: list[str], buffer: int,
                 concurrency: int) -> None:
        self.sim, self.strategy, self.executor, self.ids = sim, strategy, executor, ids
        self.buffer_size, self.concurrency = buffer, concurrency
        self.launches, self.version = 0, 0
        self.flights: list[tuple[tuple[float, int], Flight]] = []  # a heap
        self.buffer: list[Flight] = []
        self._reset_window()

    def _reset_window(self) -> None:
        self.sampled: list[str] = []
        self.dropped: dict[str, str] = {}
        self.partial: dict[str, float] = {}
        self.bytes_up = self.bytes_down = 0
        self.wall_start = time.perf_counter()

    # -- the loop -------------------------------------------------------------------------
    def records(self, rounds: int):
        """Yield one history record per applied update until ``rounds`` have been applied."""
        while self.version < rounds:
            self._launch()
            if not self.flights:  # nobody idle is online: wait for the first to come online
                busy = {f.res.client_id for f in self.buffer}
                waits = [self.sim._clock.profiles[c].offline_for(self.sim._sim_time)
                         for c in self.ids if c not in busy]
                self.sim._sim_time += min((w for w in waits if w > 0), default=0.0)
                continue
            _, flight = heapq.heappop(self.flights)
            self.sim._sim_time = flight.finish_time
            self.bytes_up += flight.res.nbytes
            if flight.reason is not None:
                self.dropped[flight.res.client_id] = flight.reason
                continue
            self.buffer.append(flight)
            if len(self.buffer) == self.buffer_size:
                yield self._apply()

    def _launch(self) -> None:
        sim, params = self.sim, self.sim.model_.flat_params
        busy = {f.res.client_id for _, f in self.flights} | {f.res.client_id for f in self.buffer}
        idle = [c for c in self.ids if c not in busy
                and sim._clock.profiles[c].online_for(sim._sim_time) > 0]
        config = self.strategy.configure_fit(self.version + 1)
        down = params.nbytes + sum(a.nbytes for a in config.arrays.values())
        tasks: list[FitIns] = []
        starts: dict[str, int] = {}
        while idle and len(self.flights) + len(tasks) < self.concurrency:
            self.launches += 1
            rng = make_rng(int(sim.seed), self.launches + ASYNC_LAUNCH_OFFSET, SAMPLING)
            cid = idle.pop(int(rng.integers(len(idle))))
            self.sampled.append(cid)
            reason, work = sim._fate(self.launches, cid)
            if reason is not None:
                self.dropped[cid] = reason
                continue
            if work < 1.0:
                self.partial[cid] = work
            tasks.append(FitIns(cid, self.launches, int(sim.seed), config.hooks, config.arrays,
                                sim.client_states_.get(cid, {}), work))
            starts[cid] = self.launches
        if not tasks:
            return
        self.bytes_down += down * len(tasks)
        work = {ins.client_id: ins.work_fraction for ins in tasks}
        for res in self.executor.fit(params, tasks):
            res = _own(res)  # executors may reuse a result's buffers
            reason = check_result(res, params.size, params.dtype)
            up = res.nbytes if reason is not None else self.strategy.upload_nbytes(res)
            took = sim._clock.time(res.client_id, work[res.client_id], down, up)
            if reason is None:
                reason = sim._clock.late(res.client_id, sim._sim_time, took)
            flight = Flight(starts[res.client_id], self.version, sim._sim_time,
                            sim._sim_time + took.finish_s, res, reason)
            heapq.heappush(self.flights, (flight.key(), flight))

    def _apply(self) -> dict:
        sim, strategy = self.sim, self.strategy
        t = self.version + 1
        agg = strategy.begin_aggregate(t)
        staleness, new_states, loss_sum, loss_weight = [], {}, 0.0, 0
        for flight in self.buffer:
            res, tau = flight.res, self.version - flight.start_version
            res.delta = np.asarray(res.delta) / math.sqrt(1 + tau)
            try:
                agg.add(res)
            except UnusableResult as e:
                self.dropped[res.client_id] = f"unusable result: {e}"
                continue
            staleness.append(tau)
            new_states[res.client_id] = res.state
            if "loss" in res.metrics:
                loss_sum += res.num_examples * float(res.metrics["loss"])
                loss_weight += res.num_examples
        status, failure, metrics = sim._close(t, strategy, agg, new_states)
        record = {
            "round": t, "status": status, "sampled": self.sampled, "ok": agg.client_ids,
            "dropped": self.dropped, "partial": self.partial, "num_sampled": len(self.sampled),
            "num_ok": agg.count,
            "train_loss": float(loss_sum / loss_weight) if loss_weight else None,
            "bytes_up": int(self.bytes_up), "bytes_down": int(self.bytes_down),
            "staleness": {"mean": float(np.mean(staleness)) if staleness else None,
                          "max": int(max(staleness)) if staleness else None},
        }
        record.update(metrics)
        if failure is not None:
            record["failure"] = failure
        record["wall_time"] = time.perf_counter() - self.wall_start
        record["sim_time"] = sim._sim_time
        self.version, self.buffer = t, []
        self._reset_window()
        return record

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, dict[str, np.ndarray]]:
        """The clients in flight and the counters, as client-state entries for a checkpoint
        (taken right after an update: the buffer is empty)."""
        out = {f"{STATE_PREFIX}counters": {"launches": np.array([self.launches])}}
        for i, (_, f) in enumerate(sorted(self.flights, key=lambda kf: kf[0])):
            res = f.res
            info = {"client_id": res.client_id, "launch": f.launch,
                    "start_version": f.start_version, "start_time": f.start_time,
                    "finish_time": f.finish_time, "reason": f.reason, "error": res.error,
                    "num_examples": res.num_examples, "metrics": res.metrics}
            arrays = {"info": _text_array(json.dumps(info))}
            if res.delta is not None:
                arrays["delta"] = res.delta
            arrays.update({f"state.{k}": v for k, v in res.state.items()})
            arrays.update({f"extra.{k}": v for k, v in res.extras.items()})
            out[f"{STATE_PREFIX}{i}"] = arrays
        return out

    def load_state(self, client_states: dict, version: int) -> None:
        """Restore :meth:`state` from ``client_states`` (removing its entries) at ``version``."""
        self.version = version
        for key in sorted(k for k in client_states if k.startswith(STATE_PREFIX)):
            arrays = client_states.pop(key)
            if key == f"{STATE_PREFIX}counters":
                self.launches = int(arrays["launches"][0])
                continue
            info = json.loads(arrays["info"].tobytes().decode())
            res = FitRes(info["client_id"], arrays.get("delta"), info["num_examples"],
                         info["metrics"],
                         {k[6:]: v for k, v in arrays.items() if k.startswith("state.")},
                         {k[6:]: v for k, v in arrays.items() if k.startswith("extra.")},
                         info["error"])
            flight = Flight(info["launch"], info["start_version"], info["start_time"],
                            info["finish_time"], res, info["reason"])
            heapq.heappush(self.flights, (flight.key(), flight))


def _own(res: FitRes) -> FitRes:
    """``res`` with copies of its arrays."""
    return FitRes(res.client_id, None if res.delta is None else res.delta.copy(),
                  res.num_examples, dict(res.metrics),
                  {k: v.copy() for k, v in res.state.items()},
                  {k: v.copy() for k, v in res.extras.items()}, res.error)
