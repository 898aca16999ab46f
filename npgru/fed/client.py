"""The client side of a round: local training from the global parameters, returning a delta.

A client receives the flat global parameter vector θ and a :class:`FitIns`, trains a copy of the
model on its own data, and returns a :class:`FitRes` holding the delta θ_k − θ, its example
count n_k and metrics. Strategies that change local training (FedProx's proximal term,
SCAFFOLD's control variates) and, later, update transforms (clipping, compression, masking) do
so through :class:`ClientHook` objects carried by the :class:`FitIns` — the training loop here
knows none of them by name.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from .._checks import InputTypeError, InputValueError
from ..datasets.base import ClientData
from ..optim import SGD, Adam, AdamW, clip_grad_norm
from ..train import minibatches
from .sampling import MODEL, TRAINING, make_rng, make_seed_sequence


@dataclass(frozen=True)
class LocalTraining:
    """How every client trains locally (the same for all clients unless a mapping is given).

    Parameters
    ----------
    optimizer : {"sgd", "adam", "adamw"} or callable, default "sgd"
        An npgru optimizer name, or ``f(model) -> optimizer``. A fresh optimizer is built for
        every client and round, as in FedAvg.
    lr : float, default 0.1
        Local learning rate (passed to a named optimizer).
    optimizer_kwargs : dict, optional
        Further keyword arguments for a named optimizer (momentum, weight_decay, …).
    batch_size : int, default 32
        Local minibatch size.
    epochs : int or mapping of client id to int, default 1
        Local epochs per round (per client, if a mapping; missing ids get 1).
    steps : int or mapping of client id to int, optional
        A local step budget instead of epochs; overrides ``epochs`` where given.
    clip_norm : float, optional
        Clip each local gradient to this L2 norm.
    time_budget : float, optional
        Seconds of wall time a client may spend; one that takes longer is dropped.
    """

    optimizer: str | Callable = "sgd"
    lr: float = 0.1
    optimizer_kwargs: Mapping = field(default_factory=dict)
    batch_size: int = 32
    epochs: int | Mapping[str, int] = 1
    steps: int | Mapping[str, int] | None = None
    clip_norm: float | None = None
    time_budget: float | None = None

    def num_steps(self, client_id: str, num_examples: int) -> int:
        """Local steps ``client_id`` takes in a round with ``num_examples`` training examples."""
        steps = _per_client(self.steps, client_id, None)
        if steps is not None:
            return int(steps)
        return int(_per_client(self.epochs, client_id, 1)) * math.ceil(
            num_examples / self.batch_size
        )

    def make_optimizer(self, model):
        """A fresh optimizer for ``model``."""
        if callable(self.optimizer):
            return self.optimizer(model)
        classes = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
        return classes[self.optimizer](model, lr=self.lr, **dict(self.optimizer_kwargs))

    def check_optimizer(self, model) -> None:
        """Build the optimizer once for ``model``, so bad ``optimizer_kwargs`` are refused up
        front instead of failing every client of every round.

        Raises
        ------
        TypeError, ValueError
            An :class:`~npgru._checks.InputError` naming ``optimizer_kwargs``.
        """
        if callable(self.optimizer):
            return
        try:
            self.make_optimizer(model)
        except (TypeError, ValueError) as e:
            error = InputTypeError if isinstance(e, TypeError) else InputValueError
            raise error(f"optimizer_kwargs {dict(self.optimizer_kwargs)!r} do not suit optimizer "
                        f"{self.optimizer!r}: {e}") from e


def _per_client(value, client_id: str, default):
    if isinstance(value, Mapping):
        return value.get(client_id, default)
    return default if value is None else value


@dataclass
class FitIns:
    """What the server sends one client for one round (besides the global parameters).

    Attributes
    ----------
    client_id : str
    server_round : int
    seed : int
        The simulation seed; the client's generator derives from (seed, round, client_id) only.
    hooks : tuple of ClientHook
        The strategy's (and transforms') client-side hooks, applied in order.
    arrays : dict of str to ndarray
        Arrays the strategy broadcasts (e.g. SCAFFOLD's server control variate ``c``).
    state : dict of str to ndarray
        This client's persistent state from its previous rounds (e.g. SCAFFOLD's ``c_i``).
    work_fraction : float
        Fraction of its step budget the client completes (< 1 for a straggler cut at the
        deadline whose partial work is kept).
    """

    client_id: str
    server_round: int
    seed: int
    hooks: tuple = ()
    arrays: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    work_fraction: float = 1.0

    def rng(self) -> np.random.Generator:
        """The client's training generator for this round."""
        return make_rng(self.seed, self.server_round, TRAINING, self.client_id)

    @property
    def nbytes(self) -> int:
        """Bytes sent down besides the parameter vector."""
        return sum(a.nbytes for a in self.arrays.values()) + sum(
            a.nbytes for a in self.state.values()
        )


@dataclass
class FitRes:
    """A client's answer: a delta and what goes with it, or the error that stopped it.

    Attributes
    ----------
    client_id : str
    delta : ndarray or None
        θ_k − θ, shape ``(num_params,)`` (float64 from :func:`local_update`); ``None`` if the
        client failed.
    num_examples : int
        n_k, the weight of the delta in a weighted mean.
    metrics : dict
        At least ``"loss"`` (mean local training loss) and ``"steps"`` for the default update.
    state : dict of str to ndarray
        The client's new persistent state, stored only if the round commits.
    extras : dict of str to ndarray
        Further vectors for the strategy to aggregate (e.g. SCAFFOLD's Δc_i).
    error : str or None
        Why the client failed, if it did.
    """

    client_id: str
    delta: np.ndarray | None = None
    num_examples: int = 0
    metrics: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def nbytes(self) -> int:
        """Bytes sent up."""
        arrays = [self.delta, *self.state.values(), *self.extras.values()]
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


@dataclass
class HookContext:
    """What a :class:`ClientHook` sees of the local update in progress."""

    ins: FitIns
    global_params: np.ndarray
    lr: float
    steps: int = 0
    extras: dict = field(default_factory=dict)
    new_state: dict = field(default_factory=dict)
    scratch: dict = field(default_factory=dict)  # per-update working values of the hooks


class ClientHook:
    """A client-side hook: changes local gradients and/or the outgoing delta.

    Subclasses override any of the three methods; they must be picklable (module-level
    classes holding plain values) because they travel to worker processes with the
    :class:`FitIns`.
    """

    def begin(self, ctx: HookContext) -> None:
        """Called once before local training."""

    def on_grad(self, grads: np.ndarray, params: np.ndarray, ctx: HookContext) -> None:
        """Modify the flat gradient in place before each optimizer step."""

    def on_delta(self, delta: np.ndarray, ctx: HookContext) -> None:
        """Modify the delta in place, and/or set ``ctx.new_state`` / ``ctx.extras``."""


class ClientTimeout(RuntimeError):
    """Raised inside a local update that ran past its time budget."""


class UnusableResult(ValueError):
    """Raised by a round's aggregate (a transform such as FedNova's) that cannot use one
    client's result, before changing anything: the round loop drops that client with the message.
    """


class DeadlineExceeded(BaseException):
    """Raised by :func:`deadline`'s timer inside a client that ran past its time budget.

    A ``BaseException``, like ``KeyboardInterrupt``, so that a client's own ``except Exception``
    cannot swallow it and go on.
    """


def can_interrupt() -> bool:
    """Whether :func:`deadline` can interrupt code here: the main thread, a POSIX timer, none
    already armed by someone else (which it would otherwise cancel)."""
    return (hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[bool]:
    """Raise :class:`DeadlineExceeded` in the code inside if it runs longer than ``seconds``.

    A real-time timer (``SIGALRM``) interrupts the code between two Python bytecodes, so a
    client stuck in a loop or a ``sleep`` is stopped even in the middle of a step. Yields whether
    the timer is armed: not when ``seconds`` is None or where :func:`can_interrupt` is false
    (then only the checks after each step and after the update apply, and the process and Ray
    executors stop a worker past its deadline from outside).
    """
    if seconds is None or not can_interrupt():
        yield False
        return

    def on_alarm(signum, frame):
        raise DeadlineExceeded(f"interrupted after its time budget of {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _epochs(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Minibatch indices, epoch after epoch, so that a step budget may end mid-epoch."""
    # A single full batch keeps its order: shuffling it would only change the rounding.
    shuffle = rng if n > batch_size else None
    while True:
        yield from minibatches(n, batch_size, shuffle)


def local_update(model, data: ClientData, ins: FitIns, training: LocalTraining) -> FitRes:
    """Train ``model`` (already holding the global parameters) on ``data``; return the delta.

    Minibatches are drawn without replacement from a permutation per epoch, from the client's
    own generator; step budgets run across epoch boundaries.

    Parameters
    ----------
    model : Module
        A model with ``loss_and_grad(X, y, lengths)``, its ``flat_params`` set to θ.
    data : ClientData
    ins : FitIns
    training : LocalTraining

    Returns
    -------
    FitRes
    """
    theta = model.flat_params.copy()
    ctx = HookContext(ins=ins, global_params=theta, lr=float(training.lr))
    for hook in ins.hooks:
        hook.begin(ctx)
    n = data.num_train
    if n == 0:
        raise ValueError(f"client {data.client_id!r} has no training examples")
    budget = training.num_steps(ins.client_id, n)
    steps = max(1, math.floor(budget * ins.work_fraction)) if ins.work_fraction < 1 else budget
    optimizer = training.make_optimizer(model)
    rng = ins.rng()
    start = time.perf_counter()
    loss_sum = 0.0
    for step, idx in zip(range(steps), _epochs(n, training.batch_size, rng), strict=False):
        lengths = None if data.lengths_train is None else data.lengths_train[idx]
        loss, _ = model.loss_and_grad(data.x_train[idx], data.y_train[idx], lengths)
        for hook in ins.hooks:
            hook.on_grad(model.flat_grads, model.flat_params, ctx)
        if training.clip_norm is not None:
            clip_grad_norm(model.flat_grads, training.clip_norm)
        optimizer.step()
        loss_sum += float(loss)
        ctx.steps = step + 1
        if training.time_budget is not None and time.perf_counter() - start > training.time_budget:
            raise ClientTimeout(f"exceeded its time budget of {training.time_budget} s")
    # In float64, θ_k − θ of two float32 vectors is exact, so the server's θ + Σ w_k Δ_k
    # (summed in float64, rounded to the model's dtype once) is the float64 weighted average
    # of the client models: sending deltas loses nothing against averaging models.
    delta = np.subtract(model.flat_params, theta, dtype=np.float64)
    for hook in ins.hooks:
        hook.on_delta(delta, ctx)
    return FitRes(
        client_id=ins.client_id,
        delta=delta,
        num_examples=n,
        metrics={"loss": loss_sum / steps, "steps": steps},
        state=ctx.new_state,
        extras=ctx.extras,
    )


def _generator_slots(module) -> list[tuple[object, str]]:
    """(owner, attribute) of every generator in a module tree (dropout masks), found once."""
    slots = _GENERATOR_SLOTS.get(module)
    if slots is None:
        slots, stack = [], [module]
        while stack:
            m = stack.pop()
            slots += [(m, name) for name in sorted(vars(m))
                      if isinstance(getattr(m, name), np.random.Generator)]
            stack += list(getattr(m, "_children", {}).values())
        _GENERATOR_SLOTS[module] = slots
    return slots


_GENERATOR_SLOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reseed_module(module, seq: np.random.SeedSequence) -> None:
    """Give every generator in a module tree (dropout masks) a fresh stream derived from ``seq``.

    A model's generators would otherwise carry state over from whichever client it trained
    before, making a client's masks depend on the executor's scheduling.
    """
    slots = _generator_slots(module)
    for (owner, name), child in zip(slots, seq.spawn(len(slots)), strict=True):
        setattr(owner, name, np.random.Generator(np.random.PCG64(child)))


def run_fit(update: Callable, model, data: ClientData, params: np.ndarray, ins: FitIns,
            training: LocalTraining) -> FitRes:
    """Load ``params`` into ``model``, run ``update`` and turn any failure into a failed result.

    Executors call this in whatever process holds the client, so a client that raises (even
    ``SystemExit``), runs past ``training.time_budget`` (interrupted by :func:`deadline`) or
    returns a result :func:`check_result` refuses is reported, not propagated: the round goes on
    without it, and every executor reports it the same way. Only ``KeyboardInterrupt`` stops
    the run.
    """
    model.flat_params[...] = params
    model.zero_grad()
    model.train()
    reseed_module(model, make_seed_sequence(ins.seed, ins.server_round, MODEL, ins.client_id))
    start = time.perf_counter()
    try:
        with deadline(training.time_budget):
            res = update(model, data, ins, training)
    except (ClientTimeout, DeadlineExceeded) as e:
        return FitRes(client_id=ins.client_id, error=f"timeout: {e}")
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - any client failure is recorded, never fatal
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})"
        return FitRes(client_id=ins.client_id, error=f"raised {type(e).__name__}: {e}{where}")
    elapsed = time.perf_counter() - start
    if training.time_budget is not None and elapsed > training.time_budget:
        # A custom update without the in-loop check: it finished, but too late to count.
        return FitRes(
            client_id=ins.client_id,
            error=f"timeout: took {elapsed:.3g} s, over its time budget of {training.time_budget} s",
        )
    if not isinstance(res, FitRes):
        return FitRes(
            client_id=ins.client_id,
            error=f"invalid result: local update returned {type(res).__name__}, expected FitRes",
        )
    if res.client_id != ins.client_id:
        return FitRes(
            client_id=ins.client_id,
            error=f"invalid result: it names client {res.client_id!r}",
        )
    reason = check_result(res, params.size, params.dtype)
    if reason is not None:
        return FitRes(client_id=ins.client_id, error=reason)
    res.metrics.setdefault("fit_time", elapsed)
    return res


#: the largest example count (or step count) a result may report: exact in float64
MAX_COUNT = 2**53
_FITRES_FIELDS = {f.name for f in fields(FitRes)}


def check_result(res: FitRes, size: int, dtype=np.float64) -> str | None:
    """Why ``res`` must be dropped, or ``None`` if it is a valid update of ``size`` parameters.

    Screens one client's result on its own, so that nothing it holds can fail or overflow the
    round's aggregate: the delta must be a finite float vector of the right size whose float64
    L2 norm fits ``dtype`` (the model's), ``num_examples`` a positive integer up to 2**53,
    ``metrics`` a dict of real numbers (``steps``, if given, a positive integer), and extras
    and state numeric finite arrays. Plain numbers and arrays are also what crosses processes,
    so every executor accepts and refuses the same results.
    """
    if res.error is not None:
        return str(res.error)
    unexpected = sorted(set(vars(res)) - _FITRES_FIELDS)
    if unexpected:  # they would not survive the trip between processes
        return f"invalid result: unexpected attributes {unexpected}"
    delta = res.delta
    if not isinstance(delta, np.ndarray) or delta.dtype.kind != "f":
        return f"invalid delta: expected a float array, got {type(delta).__name__}"
    if delta.shape != (size,):
        return f"wrong-size delta: shape {delta.shape}, expected ({size},)"
    # One float64 pass: NaN stays NaN, Inf or an overflowing square gives inf.
    with np.errstate(over="ignore", invalid="ignore"):
        d64 = delta.astype(np.float64, copy=False)
        norm = math.sqrt(float(np.dot(d64, d64)))
    limit = float(np.finfo(dtype).max)
    if not norm <= limit:
        if not np.isfinite(delta).all():
            return "non-finite delta (NaN or Inf)"
        return f"delta too large: its L2 norm {norm:.3g} exceeds the {np.dtype(dtype)} range"
    n = res.num_examples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= MAX_COUNT:
        shown = f"a {int(n).bit_length()}-bit integer" if isinstance(n, int) and n > MAX_COUNT \
            else repr(n)
        return f"invalid num_examples {shown}: expected a positive integer up to 2**53"
    if not isinstance(res.metrics, dict):
        return f"invalid metrics: expected a dict, got {type(res.metrics).__name__}"
    for key, value in res.metrics.items():
        if not isinstance(key, str):
            return f"invalid metric name {key!r}: expected a str"
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return f"invalid metric {key!r}: expected a real number, got {type(value).__name__}"
        if isinstance(value, int) and abs(value) > MAX_COUNT:
            return f"invalid metric {key!r}: an integer beyond 2**53"
    steps = res.metrics.get("steps", 1)
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        return f"invalid metric 'steps' {steps!r}: expected a positive integer (local steps)"
    for kind, arrays in (("extra", res.extras), ("state", res.state)):
        if not isinstance(arrays, dict):
            return f"invalid {kind}s: expected a dict, got {type(arrays).__name__}"
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
                return f"invalid {kind} {name!r}: expected a numeric array"
            if kind == "extra" and a.shape != (size,):  # averaged with the deltas
                return f"invalid extra {name!r}: expected shape ({size},), got {a.shape}"
            if not np.isfinite(a).all():
                return f"non-finite {kind} {name!r}"
    return None


@dataclass
class EvalRes:
    """One client's evaluation of the global model on its test split (or why it failed)."""

    client_id: str
    num_examples: int
    metrics: dict
    error: str | None = None


def evaluate_client(model, data: ClientData, params: np.ndarray) -> EvalRes:
    """Evaluate ``params`` on ``data``'s test split (``model.evaluate``), in eval mode."""
    model.flat_params[...] = params
    model.eval()
    try:
        metrics = model.evaluate(data.x_test, data.y_test, data.lengths_test)
    except Exception as e:  # noqa: BLE001 - one client's bad test data must not stop the run
        return EvalRes(data.client_id, data.num_test, {}, f"raised {type(e).__name__}: {e}")
    return EvalRes(data.client_id, data.num_test, {k: float(v) for k, v in metrics.items()})
