"""The training loop: seeded mini-batches, clipping, validation, early stopping, truncated BPTT.

A step is ``model.loss_and_grad`` → (clip) → ``optimizer.step``; everything a model needs to
say about its data, loss and metrics lives in the model, so this loop knows none of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from ._checks import check_positive_int
from ._progress import progress_bar
from .optim import Adam, Optimizer, clip_grad_norm

#: one step's data: (X, y, lengths or None, initial states or None)
Batch = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


class Trainable(Protocol):
    """What :func:`fit` needs of a model (every ready model in :mod:`npgru.models` has it)."""

    flat_params: np.ndarray
    flat_grads: np.ndarray

    @property
    def per_step(self) -> bool: ...  # a target per step (CharLM), not per sequence
    @property
    def last_state(self) -> np.ndarray | None: ...  # the final states of the last forward

    def check_data(self, X: Any, y: Any = None, lengths: Any = None) -> tuple: ...
    def loss_and_grad(self, X: np.ndarray, y: np.ndarray, lengths: np.ndarray | None = None,
                      h0: np.ndarray | None = None) -> tuple[float, dict]: ...
    def batch_weight(self, y: np.ndarray, lengths: np.ndarray | None) -> float: ...
    def summarise(self, means: dict) -> dict: ...
    def evaluate(self, X: Any, y: Any, lengths: Any = None) -> dict: ...
    def train(self, mode: bool = True) -> Any: ...


def minibatches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays that cover ``range(n)`` once, ``batch_size`` at a time (the last may be short).

    Shuffled by ``rng``; in order when ``rng`` is None.
    """
    order = np.arange(n) if rng is None else rng.permutation(n)
    for s in range(0, n, batch_size):
        yield order[s : s + batch_size]


def fit(model: Trainable, X: Any, y: Any, epochs: int = 1, batch_size: int = 32,
        optimizer: Optimizer | None = None, clip_norm: float | None = None, lengths: Any = None,
        validation: tuple | None = None, progress: bool = True, seed: int | None = None, *,
        patience: int | None = None, min_delta: float = 0.0, scheduler: Any = None,
        bptt: int | None = None) -> dict[str, list]:
    """Train ``model`` on ``(X, y)`` with mini-batch gradient descent.

    Parameters
    ----------
    model : SequenceRegressor, SequenceClassifier or CharLM
    X, y : array_like
        The training set, in the model's format (see its ``check_data``).
    epochs : int, default 1
    batch_size : int, default 32
    optimizer : Optimizer, optional
        Built on ``model``; ``Adam(model)`` with PyTorch's defaults if omitted.
    clip_norm : float, optional
        Clip the gradient's global L2 norm to this before every step.
    lengths : array_like of int, optional
        Valid steps per (right-padded) training sequence.
    validation : tuple, optional
        ``(X_val, y_val)`` or ``(X_val, y_val, lengths_val)``, evaluated after every epoch.
    progress : bool, default True
        Show a tqdm progress bar: drawn only on a terminal or in Jupyter (never into a
        redirected log), and only if tqdm is installed.
    seed : int, optional
        Seeds the shuffling: the same seed, model and data give the same run.
    patience : int, optional
        Early stopping: stop after this many epochs without an improvement of more than
        ``min_delta`` in the validation loss (the training loss without ``validation``), and
        restore the parameters of the best epoch.
    min_delta : float, default 0.0
    scheduler : StepLR or CosineAnnealingLR, optional
        Stepped after every epoch.
    bptt : int, optional
        Truncated backpropagation through time for per-step models (:class:`CharLM`): each
        batch's sequences are cut into windows of ``bptt`` steps and the hidden state is carried
        from one window to the next (but no gradient flows across). Whole sequences if omitted.

    Returns
    -------
    dict[str, list]
        Per epoch: ``"loss"`` and the model's metrics (means over the epoch's steps, weighted by
        examples or tokens), ``"val_loss"`` and ``"val_<metric>"`` with ``validation``, and
        ``"lr"``. Fewer than ``epochs`` entries if training stopped early.

    Raises
    ------
    FloatingPointError
        If the loss, gradient or parameters become NaN/Inf; the message names the epoch and
        step, and the model keeps the parameters at which the loss was last finite.
    """
    X, y, lengths = model.check_data(X, y, lengths)
    val = None if validation is None else _check_validation(model, validation)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    if bptt is not None:
        if not model.per_step:
            raise ValueError(f"bptt applies to per-step models (CharLM), not {type(model).__name__}")
        bptt = check_positive_int("bptt", bptt)
    if patience is not None:
        patience = check_positive_int("patience", patience)
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    optimizer = Adam(model) if optimizer is None else optimizer
    if getattr(optimizer, "params", None) is not model.flat_params:
        raise ValueError("optimizer must be built on this model (e.g. npgru.Adam(model))")

    rng = np.random.default_rng(seed)
    n, T = X.shape[0], X.shape[1]
    windows = 1 if bptt is None else math.ceil(T / bptt)
    # at most: with lengths, windows after every sequence of a batch has ended are skipped
    steps_per_epoch = math.ceil(n / batch_size) * windows
    history: dict[str, list] = {}
    last_good = model.flat_params.copy()
    best, waited = math.inf, 0
    best_params: np.ndarray | None = None
    bar = progress_bar(epochs * steps_per_epoch, "fit", "step", enabled=progress)
    model.train()
    try:
        for epoch in range(1, epochs + 1):
            totals: dict[str, float] = {}
            weight, step = 0.0, 0
            for idx in minibatches(n, batch_size, rng):
                ln = None if lengths is None else lengths[idx]
                for batch in _windows(model, X[idx], y[idx], ln, bptt):
                    step += 1
                    loss, metrics = _step(model, optimizer, clip_norm, batch, last_good,
                                          f"epoch {epoch}, step {step}")
                    w = model.batch_weight(batch[1], batch[2])
                    for k, v in {"loss": loss, **metrics}.items():
                        totals[k] = totals.get(k, 0.0) + w * v
                    weight += w
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss:.4g}", refresh=False)
            record = model.summarise({k: v / weight for k, v in totals.items()})
            if val is not None:
                record.update({f"val_{k}": v for k, v in model.evaluate(*val).items()})
            record["lr"] = optimizer.lr
            for k, v in record.items():
                history.setdefault(k, []).append(v)
            if scheduler is not None:
                scheduler.step()
            if patience is not None:
                monitored = record["val_loss" if val is not None else "loss"]
                if monitored < best - min_delta:
                    best, best_params, waited = monitored, model.flat_params.copy(), 0
                else:
                    waited += 1
                    if waited >= patience:
                        break
    finally:
        bar.close()
    if best_params is not None:
        model.flat_params[...] = best_params
    return history


def _step(model: Trainable, optimizer: Optimizer, clip_norm: float | None, batch: Batch,
          last_good: np.ndarray, where: str) -> tuple[float, dict]:
    """One update. A non-finite loss, gradient or result stops training with an error, and the
    model goes back to ``last_good``: the parameters at which the loss was last finite."""
    Xb, yb, lb, h0 = batch
    try:
        loss, metrics = model.loss_and_grad(Xb, yb, lb, h0)
        np.copyto(last_good, model.flat_params)
        if not np.all(np.isfinite(model.flat_grads)):
            raise FloatingPointError("gradient is not finite")
        if clip_norm is not None:
            clip_grad_norm(model.flat_grads, clip_norm)
        optimizer.step()
        if not np.all(np.isfinite(model.flat_params)):
            raise FloatingPointError("parameters overflowed")
    except FloatingPointError as e:
        model.flat_params[...] = last_good
        raise FloatingPointError(
            f"{e} at {where}; training stopped and the model keeps the parameters at which "
            "the loss was last finite (try a smaller learning rate or clip_norm)"
        ) from None
    return loss, metrics


def _windows(model: Trainable, X: np.ndarray, y: np.ndarray, lengths: np.ndarray | None,
             bptt: int | None) -> Iterator[Batch]:
    """``(X, y, lengths, h0)`` per window of ``bptt`` steps, carrying the state across them.

    The generator resumes only after the caller has stepped on the window it yielded, so
    ``model.last_state`` then holds that window's final states: the next window starts there.
    """
    if bptt is None:
        yield X, y, lengths, None
        return
    B, T = X.shape
    state: np.ndarray | None = None  # (layers·dirs, B, H): each sequence's last state so far
    for s in range(0, T, bptt):
        sl = slice(s, s + bptt)
        run = np.full(B, min(bptt, T - s)) if lengths is None else np.clip(lengths - s, 0, bptt)
        active = np.flatnonzero(run)  # sequences that have already ended sit this window out
        if active.size == 0:
            return
        h0 = None if state is None else state[:, active]
        yield X[active, sl], y[active, sl], None if lengths is None else run[active], h0
        last = model.last_state
        assert last is not None  # the step on the window just yielded has set it
        if state is None:
            state = np.zeros((last.shape[0], B, last.shape[2]), dtype=last.dtype)
        state[:, active] = last


def _check_validation(model: Trainable, validation: Any) -> tuple:
    if not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3):
        raise TypeError("validation must be (X_val, y_val) or (X_val, y_val, lengths_val)")
    return model.check_data(*validation)
