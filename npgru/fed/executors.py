"""Executors: where local updates run. The round loop only sees this interface.

An executor is started once with the model template, the clients, the local-training settings
and the update function; then, each round, it is handed the global parameter vector and the
round's :class:`~npgru.fed.client.FitIns` list, and yields one result per instruction **in the
order given** — that fixed order is what the streaming aggregation relies on for bit-identical
results, whatever ran first. A Ray executor fits the same four methods (actors holding clients,
``ray.put`` of the parameters once per round, results consumed in task order).
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import multiprocessing as mp
import os
import signal
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._checks import InputValueError, check_positive_int
from .._registry import Registry
from ..datasets.base import ClientData
from .client import (
    EvalRes,
    FitIns,
    FitRes,
    LocalTraining,
    can_interrupt,
    evaluate_client,
    run_fit,
)


def kill_grace(time_budget: float) -> float:
    """Seconds past a client's time budget after which a worker is stopped from outside.

    The client's own timer (:func:`~npgru.fed.client.deadline`) normally ends it at the budget;
    this backstop is for code the timer cannot interrupt (a long C call, a blocked signal).
    """
    return 1.0 + 0.1 * time_budget


def clone_model(model):
    """A fresh model of the same architecture (``type(m)(**m.config())``)."""
    if not hasattr(model, "config"):
        raise TypeError(
            f"{type(model).__name__} has no config(); federated models must be rebuildable "
            "as type(m)(**m.config())"
        )
    return type(model)(**model.config())


def single_blas_thread():
    """A context pinning the BLAS to one thread (with threadpoolctl; a no-op without it).

    Every executor runs local updates and evaluations this way. A multi-threaded BLAS splits
    a matrix product's sums differently, so the same client computes different bits with two
    threads than with one; pinning every executor to one thread keeps them bit-identical (and
    clients' small matrix products run faster single-threaded anyway).
    """
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1)


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS, built once (a scan of ~1 ms); None without it."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # then every process keeps the BLAS's default: the same everywhere
        return None
    return ThreadpoolController()


class Executor:
    """The interface every executor implements (and a context manager closing it).

    Implementations run clients with one BLAS thread (:func:`single_blas_thread`) so that
    all executors compute the same bits.
    """

    def start(self, model, clients: Sequence[ClientData], training: LocalTraining,
              update: Callable) -> None:
        """Prepare to run ``update`` for ``clients``; called once before the first round."""
        raise NotImplementedError

    def fit(self, params: np.ndarray, tasks: Sequence[FitIns]) -> Iterator[FitRes]:
        """Run one local update per task from ``params``; yield results in task order.

        A result's arrays need only stay valid until the next result is requested (the
        round loop consumes each at once), so an executor may reuse transfer buffers.
        """
        raise NotImplementedError

    def evaluate(self, params: np.ndarray, client_ids: Sequence[str]) -> Iterator[EvalRes]:
        """Evaluate ``params`` on each client's test split; yield results in the given order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers and memory; the executor may be started again afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialExecutor(Executor):
    """Runs every client in this process, one after another, on one model instance.

    A client past ``time_budget`` is interrupted by a timer signal (``SIGALRM``), which only the
    main thread can receive. Run from another thread (or where a timer is already armed), a
    client is checked only after each local step and after its update, so one stuck inside a
    step holds the round: a ``RuntimeWarning`` says so when the executor starts, and
    ``executor="process"`` enforces the deadline from any thread.
    """

    def start(self, model, clients, training, update):
        if training.time_budget is not None and not can_interrupt():
            warnings.warn(
                "the serial executor can interrupt a client past time_budget only in the main "
                "thread; here a client stuck inside a step is not stopped (use "
                "executor='process')", RuntimeWarning, stacklevel=2)
        self._model = clone_model(model)
        self._clients = {c.client_id: c for c in clients}
        self._training, self._update = training, update

    def fit(self, params, tasks):
        for ins in tasks:
            with single_blas_thread():
                res = run_fit(self._update, self._model, self._clients[ins.client_id], params,
                              ins, self._training)
            yield res

    def evaluate(self, params, client_ids):
        with single_blas_thread():
            results = [evaluate_client(self._model, self._clients[cid], params)
                       for cid in client_ids]
        yield from results


#: Memory the process executor's result slots may take before it falls back to two per worker.
SLOT_BYTES = 256 * 2**20


def num_slots(workers: int, size: int) -> int:
    """Result slots of a :class:`ProcessExecutor` for ``workers`` and ``size`` parameters."""
    return max(2 * workers, min(16 * workers, SLOT_BYTES // (8 * max(1, size))))


# State of a worker process, set once by _init_worker (fork inherits everything it needs).
_worker: dict = {}


def _init_worker(model, clients, training, update, params_buffer, slots_buffer, pids_buffer,
                 starts_buffer, dtype, size, num_slots):
    # Ctrl-C reaches the whole process group: the parent handles it and ends the pool, so a
    # worker printing its own KeyboardInterrupt traceback would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Entered for the worker's whole life: the workers are the parallelism.
    single_blas_thread().__enter__()
    _worker.update(
        model=clone_model(model),
        clients={c.client_id: c for c in clients},
        training=training,
        update=update,
        size=size,
        params=np.frombuffer(params_buffer, dtype=dtype, count=size),
        slots=np.frombuffer(slots_buffer, dtype=np.float64).reshape(num_slots, size),
        pids=np.frombuffer(pids_buffer, dtype=np.int64, count=num_slots),
        starts=np.frombuffer(starts_buffer, dtype=np.float64, count=num_slots),
    )


def _begin(slot: int) -> None:
    """Record which process runs the task in ``slot``, and since when (CLOCK_MONOTONIC is
    system-wide, so the parent can compare it with its own clock)."""
    _worker["starts"][slot] = time.monotonic()
    _worker["pids"][slot] = os.getpid()


def _fit_one(ins: FitIns, slot: int) -> tuple[FitRes, bool]:
    """Run one update; put a well-formed delta into the shared ``slot`` instead of the pipe."""
    w = _worker
    _begin(slot)  # so the parent can tell if this task's process dies or hangs
    res = run_fit(w["update"], w["model"], w["clients"][ins.client_id], w["params"], ins,
                  w["training"])
    d = res.delta
    if isinstance(d, np.ndarray) and d.dtype.kind == "f" and d.shape == (w["size"],):
        w["slots"][slot] = d  # exact: every float dtype widens to float64 without rounding
        res.delta = None
        return res, True
    return res, False  # anything malformed travels as is, for the loop to reject and report


def _evaluate_one(client_id: str, slot: int) -> EvalRes:
    w = _worker
    _begin(slot)
    return evaluate_client(w["model"], w["clients"][client_id], w["params"])


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (0: the task has not started, so yes)."""
    if pid == 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerDied(RuntimeError):
    """The worker process running a task exited before returning its result."""


class WorkerTimedOut(RuntimeError):
    """The worker process running a task was killed for running past the time budget."""


class ProcessExecutor(Executor):
    """Runs clients in a pool of forked worker processes.

    Workers are forked after the clients' data is in memory, so they share it copy-on-write
    and nothing about the clients is ever pickled. The global parameters are written once per
    round into a shared memory map that every worker reads, and each delta comes back through
    one of a few shared result slots; only the small instructions and metadata cross the
    pipes. Results come back in task order, so a slow client holds its slot until it is done;
    the tasks behind it keep the other workers busy only while free slots remain. There are
    therefore up to ``16 × workers`` slots (at least ``2 × workers``), as many as fit in
    :data:`SLOT_BYTES`: on 2 cores a client of ten times the mean no longer idles the other
    worker, and memory stays bounded whatever the model's size.
    A worker that dies in a task (a segfault, the OOM killer) costs only that task: the client is
    reported failed and the pool starts a replacement worker. A client still running
    :func:`kill_grace` seconds past ``time_budget`` (stuck where its own timer cannot reach it)
    has its worker killed and replaced the same way, and is reported as timed out.

    Parameters
    ----------
    workers : int, optional
        Number of processes (default: the number of CPUs).

    Notes
    -----
    A delta yielded by :meth:`fit` is a view of a shared slot, reused once the next result
    is requested: copy it to keep it (the round loop adds it to its running sum at once).
    """

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def start(self, model, clients, training, update):
        if "fork" not in mp.get_all_start_methods():
            raise RuntimeError(
                "ProcessExecutor needs the 'fork' start method (Linux, macOS); use "
                "executor='serial' on this platform"
            )
        workers = self.workers if self.workers is not None else (os.cpu_count() or 1)
        workers = check_positive_int("workers", workers)
        size, dtype = model.flat_params.size, model.flat_params.dtype
        self._num_slots = num_slots(workers, size)
        # Anonymous shared mappings, created before the fork so the children inherit them.
        self._params_buffer = mmap.mmap(-1, max(1, size * dtype.itemsize))
        self._slots_buffer = mmap.mmap(-1, max(1, self._num_slots * size * 8))
        self._params = np.frombuffer(self._params_buffer, dtype=dtype, count=size)
        self._slots = np.frombuffer(self._slots_buffer, dtype=np.float64).reshape(
            self._num_slots, size)
        # which process runs the task in each slot (0: not started yet)
        self._pids_buffer = mmap.mmap(-1, self._num_slots * 8)
        self._pids = np.frombuffer(self._pids_buffer, dtype=np.int64)
        self._starts_buffer = mmap.mmap(-1, self._num_slots * 8)
        self._starts = np.frombuffer(self._starts_buffer, dtype=np.float64)
        self._time_budget = training.time_budget
        self._pool: Any = mp.get_context("fork").Pool(  # None once closed
            workers, _init_worker,
            (model, list(clients), training, update, self._params_buffer, self._slots_buffer,
             self._pids_buffer, self._starts_buffer, dtype, size, self._num_slots),
        )
        self._workers = workers

    def fit(self, params, tasks):
        # Safe to overwrite: the loop consumes every result of a round before the next one.
        self._params[...] = params
        for ins, slot, outcome in self._in_order(_fit_one, tasks, self._time_budget):
            if isinstance(outcome, WorkerTimedOut):
                res = FitRes(ins.client_id, error=f"timeout: {outcome}")
            elif isinstance(outcome, Exception):  # e.g. a result that cannot be pickled
                res = FitRes(ins.client_id, error=f"executor: {type(outcome).__name__}: {outcome}")
            else:
                res, in_slot = outcome
                if in_slot:
                    res.delta = self._slots[slot]
            yield res

    def evaluate(self, params, client_ids):
        self._params[...] = params
        for cid, _, outcome in self._in_order(_evaluate_one, client_ids):
            if isinstance(outcome, Exception):  # reported like a failing evaluation
                outcome = EvalRes(cid, 0, {}, error=f"executor: {type(outcome).__name__}: {outcome}")
            yield outcome

    def _in_order(self, fn, items, time_budget: float | None = None):
        """Yield ``(item, slot, fn(item, slot) or the exception it raised)`` in ``items`` order.

        At most one task per slot is in flight; a slot is handed out again only once the
        consumer has moved past its result, so a result living in a slot stays valid.
        """
        queue, free = iter(items), list(range(self._num_slots))
        pending: deque[tuple[Any, int, Any]] = deque()  # (item, slot, async result)

        def submit() -> None:
            item = next(queue, None)
            if item is not None:
                slot = free.pop()
                self._pids[slot] = 0
                pending.append((item, slot, self._pool.apply_async(fn, (item, slot))))

        for _ in range(self._num_slots):
            submit()
        while pending:
            item, slot, handle = pending.popleft()
            try:
                outcome = self._wait(handle, slot, time_budget)
            except Exception as e:  # noqa: BLE001 - the caller turns it into a recorded failure
                outcome = e
            yield item, slot, outcome
            free.append(slot)  # the consumer has moved on: the slot may be overwritten
            submit()

    def _wait(self, handle, slot: int, time_budget: float | None):
        """``handle``'s result, :class:`WorkerDied` if the process running it is gone, or
        :class:`WorkerTimedOut` once it has run :func:`kill_grace` past ``time_budget`` (then
        the process is killed).

        ``multiprocessing.Pool`` replaces a dead worker but never resolves the task it held,
        so a plain ``get()`` would wait forever.
        """
        limit = None if time_budget is None else time_budget + kill_grace(time_budget)
        while True:
            try:
                return handle.get(timeout=0.2)
            except mp.TimeoutError:
                pid = int(self._pids[slot])
                if handle.ready():
                    continue
                if not _alive(pid):
                    raise WorkerDied(f"worker process {pid} died while running the task") from None
                if pid and limit is not None and time.monotonic() - self._starts[slot] > limit:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)  # the pool starts a replacement
                    raise WorkerTimedOut(
                        f"still running {limit:.3g} s after it started (time budget "
                        f"{time_budget} s); its worker process {pid} was killed") from None

    def close(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.terminate()
            pool.join()
            # The maps are unmapped when the last view goes (a caller may still hold a delta).
            del self._params, self._slots, self._params_buffer, self._slots_buffer, self._pids
            del self._starts, self._starts_buffer
            self._pool = None


def _ray_executor(workers: int | None = None) -> Executor:
    from .ray_executor import RayExecutor

    return RayExecutor(workers)


#: ``executor=`` / ``npgru federate --executor`` names: name → ``f(workers) -> Executor``.
EXECUTORS: Registry = Registry("executor")
EXECUTORS.register("serial", lambda workers=None: SerialExecutor())
EXECUTORS.register("process", ProcessExecutor)
EXECUTORS.register("ray", _ray_executor)


def make_executor(executor: str | Executor, workers: int | None = None) -> Executor:
    """Resolve a name of :data:`EXECUTORS` (``"serial"``, ``"process"``, ``"ray"``) or an
    :class:`Executor` instance.

    ``"ray"`` starts (or, with ``RAY_ADDRESS`` set, joins) a Ray cluster; it needs the ``ray``
    extra (``pip install npgru[ray]``).
    """
    if isinstance(executor, Executor):
        return executor
    if not isinstance(executor, str) or executor not in EXECUTORS:
        raise InputValueError(
            f"executor must be one of {', '.join(map(repr, EXECUTORS))} or an Executor, "
            f"got {executor!r}")
    return EXECUTORS[executor](workers)
