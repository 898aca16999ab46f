"""A Ray executor: local updates on Ray actors, on one machine or across a cluster.

The clients' data is put into Ray's object store once, when the executor starts; every actor
(one CPU each) builds its own model from the template and reads the data from its node's object
store without copying the arrays. Each round the global parameter vector is put once, and every
instruction goes to whichever actor is idle. Results are handed to the round loop **in task
order** (buffered when they finish out of order), so the global model is bit-identical to the
serial executor's, whatever the cluster's size or timing.

A worker process that dies (a lost node, an out-of-memory kill) is restarted by Ray and its
task run again: a local update is a deterministic function of its inputs, so the repeated
result is the same. A client whose update still cannot complete is returned as a failed
:class:`~npgru.fed.client.FitRes` and dropped from the round like any failing client. A client
still running :func:`~npgru.fed.executors.kill_grace` seconds past ``time_budget`` has its actor
killed and replaced, and is dropped as timed out.

Ray is an optional extra (``pip install npgru[ray]``), imported when the executor starts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._checks import check_positive_int
from .client import EvalRes, FitIns, FitRes, evaluate_client, run_fit
from .executors import Executor, clone_model, kill_grace

#: how often Ray restarts a lost actor and re-runs its task before the client counts as failed
MAX_RETRIES = 2


class _Worker:
    """Ray actor body: one model instance and a view of every client's data."""

    def __init__(self, model, clients, training, update) -> None:
        try:  # one BLAS thread per actor: the actors are the parallelism
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except ImportError:
            pass
        self.model = clone_model(model)
        self.clients = {c.client_id: c for c in clients}
        self.training, self.update = training, update

    def ready(self) -> bool:
        """Answered once the actor is built: its start-up never counts against a deadline."""
        return True

    def fit(self, params: np.ndarray, ins: FitIns) -> FitRes:
        return run_fit(self.update, self.model, self.clients[ins.client_id], params, ins,
                       self.training)

    def evaluate(self, params: np.ndarray, client_id: str) -> EvalRes:
        return evaluate_client(self.model, self.clients[client_id], params)


class RayExecutor(Executor):
    """Runs clients on Ray actors: a local Ray, or an existing cluster given by ``address``.

    Parameters
    ----------
    workers : int, optional
        Number of actors, one CPU each (default: every CPU the Ray cluster has).
    address : str, optional
        Join an existing Ray cluster: ``"<head>:6379"`` or ``"auto"`` (the cluster this machine
        belongs to, e.g. after ``ray start``), or ``"ray://<head>:10001"`` (Ray Client, from
        outside the cluster). Omitted: the Ray already initialised in this process, else the
        cluster named by the ``RAY_ADDRESS`` environment variable or last started on this
        machine, else a new local Ray instance (``ray.init``'s own rules).
    num_cpus : int, optional
        CPUs of a local Ray instance that this executor starts (default: all of them).
    init_kwargs : dict, optional
        Further arguments for ``ray.init`` (for example ``runtime_env``).

    Notes
    -----
    Ray is shut down by :meth:`close` only if this executor started it. Every node needs
    npgru (and the model's module) importable, at the driver's version.
    """

    def __init__(self, workers: int | None = None, address: str | None = None,
                 num_cpus: int | None = None, init_kwargs: dict | None = None) -> None:
        self.workers = workers
        self.address = address
        self.num_cpus = num_cpus
        self.init_kwargs = init_kwargs

    def start(self, model, clients, training, update) -> None:
        ray = _import_ray()
        if self.workers is not None:
            check_positive_int("workers", self.workers)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=self.address, num_cpus=self.num_cpus, include_dashboard=False,
                     **(self.init_kwargs or {}))
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # once; actors on a node share its copy. Held until close(): a restarted actor
        # reads its constructor's arguments again, and they must still be in the store.
        self._clients_ref = ray.put(list(clients))
        actor = ray.remote(num_cpus=1, max_restarts=MAX_RETRIES,
                           max_task_retries=MAX_RETRIES)(_Worker)
        self._ray = ray
        self._new_actor: Any = (  # a factory of actors; None once closed
            lambda: actor.remote(model, self._clients_ref, training, update))
        self._actors = [self._new_actor() for _ in range(workers)]
        ray.get([a.ready.remote() for a in self._actors])
        budget = training.time_budget
        self._fit_limit = None if budget is None else budget + kill_grace(budget)

    def fit(self, params, tasks) -> Iterator[FitRes]:
        def failed(ins: FitIns, error: Exception) -> FitRes:
            return FitRes(client_id=ins.client_id,
                          error=f"Ray worker lost: {type(error).__name__}: {error}")

        def timed_out(ins: FitIns) -> FitRes:
            return FitRes(client_id=ins.client_id,
                          error=f"timeout: still running {self._fit_limit:.3g} s after it started; "
                                "its Ray actor was killed")

        yield from self._in_order("fit", params, tasks, failed, (self._fit_limit, timed_out))

    def evaluate(self, params, client_ids) -> Iterator[EvalRes]:
        yield from self._in_order("evaluate", params, client_ids, None)

    def _in_order(self, method: str, params: np.ndarray, items: Sequence,
                  on_error, deadline: tuple = (None, None)) -> Iterator[Any]:
        """Run ``actor.<method>(params, item)`` on idle actors; yield results in item order.

        ``deadline`` is ``(seconds, on_timeout)``: a task still running that long after it
        was handed to an (idle) actor has the actor killed and replaced, and its result is
        ``on_timeout(item)``.
        """
        limit, on_timeout = deadline
        ray = self._ray
        params_ref = ray.put(np.ascontiguousarray(params))  # once per round, not per task
        pending = deque(enumerate(items))
        idle = list(self._actors)
        running: dict = {}  # object ref -> (item index, actor, start time)
        finished: dict[int, Any] = {}
        next_index = 0
        while next_index < len(items):
            while idle and pending:
                i, item = pending.popleft()
                worker = idle.pop()
                ref = getattr(worker, method).remote(params_ref, item)
                running[ref] = (i, worker, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1,
                                timeout=None if limit is None else 0.2)
            if limit is not None:
                now = time.monotonic()
                for ref in [r for r, (_, _, t0) in running.items()
                            if r not in ready and now - t0 > limit]:
                    i, worker, _ = running.pop(ref)
                    ray.kill(worker, no_restart=True)
                    finished[i] = on_timeout(items[i])
                    idle.append(self._replace(worker))
            for ref in ready:
                i, worker, _ = running.pop(ref)
                try:
                    finished[i] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    if on_error is None:
                        raise
                    finished[i] = on_error(items[i], e)
                    if isinstance(e, ray.exceptions.RayActorError):
                        worker = self._replace(worker)  # out of restarts: a fresh one
                idle.append(worker)
            while next_index in finished:
                yield finished.pop(next_index)
                next_index += 1

    def _replace(self, dead) -> Any:
        fresh = self._new_actor()
        self._ray.get(fresh.ready.remote())
        self._actors[self._actors.index(dead)] = fresh
        return fresh

    def close(self) -> None:
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for worker in self._actors:
            ray.kill(worker)
        self._actors, self._new_actor, self._clients_ref = [], None, None
        if self._owns_ray:
            ray.shutdown()
        self._ray = None


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "RayExecutor needs Ray: pip install npgru[ray] (or pip install 'ray>=2.10')"
        ) from e
    return ray
