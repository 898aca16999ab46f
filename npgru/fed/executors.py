"""Executors: where local updates run. The round loop only sees this interface.

An executor is started once with the model template, the clients, the local-training settings
and the update function; then, each round, it is handed the global parameter vector and the
round's :class:`~npgru.fed.client.FitIns` list, and yields one result per instruction **in the
order given** — that fixed order is what the streaming aggregation relies on for bit-identical
results, whatever ran first. A Ray executor fits the same four methods (actors holding clients,
``ray.put`` of the parameters once per round, results consumed in task order).
"""

from __future__ import annotations

import math
import mmap
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..datasets.base import ClientData
from .client import EvalRes, FitIns, FitRes, LocalTraining, evaluate_client, run_fit


def clone_model(model):
    """A fresh model of the same architecture (``type(m)(**m.config())``)."""
    if not hasattr(model, "config"):
        raise TypeError(
            f"{type(model).__name__} has no config(); federated models must be rebuildable "
            "as type(m)(**m.config())"
        )
    return type(model)(**model.config())


class Executor:
    """The interface every executor implements (and a context manager closing it)."""

    def start(self, model, clients: Sequence[ClientData], training: LocalTraining,
              update: Callable) -> None:
        """Prepare to run ``update`` for ``clients``; called once before the first round."""
        raise NotImplementedError

    def fit(self, params: np.ndarray, tasks: Sequence[FitIns]) -> Iterator[FitRes]:
        """Run one local update per task from ``params``; yield results in task order."""
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
    """Runs every client in this process, one after another, on one model instance."""

    def start(self, model, clients, training, update):
        self._model = clone_model(model)
        self._clients = {c.client_id: c for c in clients}
        self._training, self._update = training, update

    def fit(self, params, tasks):
        for ins in tasks:
            yield run_fit(self._update, self._model, self._clients[ins.client_id], params, ins,
                          self._training)

    def evaluate(self, params, client_ids):
        for cid in client_ids:
            yield evaluate_client(self._model, self._clients[cid], params)


# State of a worker process, set once by _init_worker (fork inherits everything it needs).
_worker: dict = {}


def _init_worker(model, clients, training, update, buffer, dtype, size):
    try:  # one BLAS thread per worker: the workers are the parallelism
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    _worker.update(
        model=clone_model(model),
        clients={c.client_id: c for c in clients},
        training=training,
        update=update,
        params=np.frombuffer(buffer, dtype=dtype, count=size),
    )


def _fit_one(ins: FitIns) -> FitRes:
    w = _worker
    return run_fit(w["update"], w["model"], w["clients"][ins.client_id], w["params"], ins,
                   w["training"])


def _evaluate_one(client_id: str) -> EvalRes:
    w = _worker
    return evaluate_client(w["model"], w["clients"][client_id], w["params"])


class ProcessExecutor(Executor):
    """Runs clients in a pool of forked worker processes.

    Workers are forked after the clients' data is in memory, so they share it copy-on-write
    and nothing about the clients is ever pickled. Each round the global parameters are written
    once into a shared anonymous memory map that every worker reads; only the small
    instructions go down the pipes, and only the results (deltas as raw array buffers) come
    back. Results are consumed in task order.

    Parameters
    ----------
    workers : int, optional
        Number of processes (default: the number of CPUs).
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
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers!r}")
        size, dtype = model.flat_params.size, model.flat_params.dtype
        self._buffer = mmap.mmap(-1, max(1, size * dtype.itemsize))  # shared with forked children
        self._params = np.frombuffer(self._buffer, dtype=dtype, count=size)
        self._pool = mp.get_context("fork").Pool(
            int(workers), _init_worker,
            (model, list(clients), training, update, self._buffer, dtype, size),
        )
        self._workers = int(workers)

    def _chunksize(self, n: int) -> int:
        # A few chunks per worker: fewer pipe round trips, still balanced across workers.
        return max(1, math.ceil(n / (4 * self._workers)))

    def fit(self, params, tasks):
        # Safe to overwrite: the loop consumes every result of a round before the next one.
        self._params[...] = params
        yield from self._pool.imap(_fit_one, tasks, self._chunksize(len(tasks)))

    def evaluate(self, params, client_ids):
        self._params[...] = params
        yield from self._pool.imap(_evaluate_one, client_ids, self._chunksize(len(client_ids)))

    def close(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.terminate()
            pool.join()
            del self._params
            self._buffer.close()
            self._pool = None


def make_executor(executor: str | Executor, workers: int | None = None) -> Executor:
    """Resolve ``"serial"``, ``"process"`` or an :class:`Executor` instance."""
    if isinstance(executor, Executor):
        return executor
    if executor == "serial":
        return SerialExecutor()
    if executor == "process":
        return ProcessExecutor(workers)
    raise ValueError(f"executor must be 'serial', 'process' or an Executor, got {executor!r}")
