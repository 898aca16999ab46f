"""Personalisation: fine-tuned evaluation and FedPer-style partial sharing.

- **Fine-tuned evaluation** (``Simulation(personalize_epochs=E)``): at every evaluation, each
  client with a test split starts from the global model (with its own head under partial
  sharing), trains E local epochs on its training split and is evaluated on its test split —
  the personalised model a device would actually use.
- **Partial sharing** (FedPer, Arivazhagan et al. 2019; ``Simulation(shared_layers=...)``):
  only the named parameter groups (e.g. the embedding and the GRU) are averaged; every other
  parameter (the head) stays on the client, kept in its persistent state from round to round.
- **Personal models** (Ditto, Li et al. 2021; the :class:`~npgru.fed.Ditto` strategy): each
  client also trains a personal model pulled towards the global one (:class:`DittoUpdate`).

Both are deterministic: fine-tuning runs in the server's process from a random stream of its
own, so every executor and a resumed run give the same figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from .._checks import InputTypeError, InputValueError
from .client import EvalRes, FitIns, FitRes, LocalTraining, evaluate_client, local_update, run_fit

#: the state key of a client's own (unshared) parameters
LOCAL_STATE = "local_params"
#: fine-tuning for round t draws from the client's training stream of round t + this: a
#: stream no training round uses
PERSONALIZE_ROUND_OFFSET = 2**32


def local_mask(model, shared_layers: Sequence[str]) -> np.ndarray:
    """Boolean mask over ``model.flat_params``: True where a parameter stays on the client.

    ``shared_layers`` are parameter-name prefixes (``"gru"``, ``"embed"``): a parameter is
    shared if its name is one of them or starts with one followed by a dot.

    Raises
    ------
    TypeError
        If ``shared_layers`` is not a sequence of strings.
    ValueError
        If a prefix matches no parameter, or every parameter is shared (nothing stays local).
    """
    if isinstance(shared_layers, str) or not all(isinstance(p, str) for p in shared_layers):
        raise InputTypeError(f"shared_layers must be a sequence of parameter-name prefixes, got "
                             f"{shared_layers!r}")
    names = [name for name, _ in model.named_parameters()]
    for prefix in shared_layers:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            raise InputValueError(f"shared_layers: {prefix!r} names no parameter of the model "
                                  f"(its parameters: {', '.join(names)})")
    mask, offset = np.zeros(model.flat_params.size, dtype=bool), 0
    for name, value in model.named_parameters():
        shared = any(name == p or name.startswith(p + ".") for p in shared_layers)
        mask[offset:offset + value.size] = not shared
        offset += value.size
    if not mask.any():
        raise InputValueError("shared_layers shares every parameter: nothing stays on the client")
    return mask


@dataclasses.dataclass(frozen=True)
class SharedLayersUpdate:
    """A local update that keeps the unshared parameters on the client (FedPer).

    Before training it loads the client's own parameters (from its state; the global ones the
    first time), after training it stores them back in the state and zeroes their part of the
    delta, so the server averages only the shared layers.

    Parameters
    ----------
    mask : ndarray of bool
        :func:`local_mask`: True where a parameter stays local.
    update : callable, default local_update
        The local update it wraps.
    """

    mask: np.ndarray
    update: Callable = local_update

    def __call__(self, model, data, ins: FitIns, training: LocalTraining) -> FitRes:
        own = ins.state.get(LOCAL_STATE)
        if own is not None:
            model.flat_params[self.mask] = own
        res = self.update(model, data, ins, training)
        if res.delta is not None:
            res.delta[self.mask] = 0.0
            res.state = {**res.state, LOCAL_STATE: model.flat_params[self.mask].astype(np.float64)}
        return res

    def describe(self) -> dict:
        """Identity in checkpoints: the shared mask and the wrapped update."""
        from .identity import describe

        return {"name": "SharedLayersUpdate", "mask": describe(self.mask),
                "update": describe(self.update)}


def personal_start(params: np.ndarray, state: dict, mask: np.ndarray | None) -> np.ndarray:
    """A client's starting point: its personal model (Ditto) if it has one, else the global
    parameters with its own unshared ones (FedPer)."""
    if PERSONAL_STATE in state:
        return np.array(state[PERSONAL_STATE], dtype=params.dtype)
    start = params.copy()
    if mask is not None and LOCAL_STATE in state:
        start[mask] = state[LOCAL_STATE]
    return start


def personalized_evaluation(model, clients, params: np.ndarray, client_states: dict,
                            training: LocalTraining, epochs: int, seed: int, server_round: int,
                            mask: np.ndarray | None = None,
                            update: Callable = local_update) -> list[EvalRes]:
    """Each client's evaluation of its personalised model (see the module docstring).

    A client that fails to fine-tune or evaluate is reported in its :class:`EvalRes`'s
    ``error``.
    """
    fine_tune = dataclasses.replace(training, epochs=epochs, steps=None, time_budget=None)
    results = []
    for c in clients:
        if not c.num_test:
            continue
        start = personal_start(params, client_states.get(c.client_id, {}), mask)
        if epochs and c.num_train:
            ins = FitIns(c.client_id, server_round + PERSONALIZE_ROUND_OFFSET, seed)
            res = run_fit(update, model, c, start, ins, fine_tune)
            if res.error is not None:
                results.append(EvalRes(c.client_id, c.num_test, {}, f"fine-tuning {res.error}"))
                continue
            start = (start + res.delta).astype(params.dtype)
        results.append(evaluate_client(model, c, start))
    return results


#: the state key of a client's personal model (Ditto)
PERSONAL_STATE = "personal_params"
#: Ditto's personal training in round t draws from the client's training stream of round
#: t + this (neither a training round nor a fine-tuning one)
DITTO_ROUND_OFFSET = 2**33


@dataclasses.dataclass(frozen=True)
class DittoUpdate:
    """Ditto's client (Li, Hu, Beirami and Smith 2021, Algorithm 1).

    The client runs the wrapped local update for the global model as usual, then trains its
    personal model ``v_k`` (kept in its state; the global model ``w`` the first time) for
    ``epochs`` epochs of plain SGD at the local learning rate on
    ``F_k(v) + λ/2 ‖v − w‖²``, where ``w`` is the global model it received. The personalised
    evaluation (:func:`personalized_evaluation`) starts from ``v_k``.

    Parameters
    ----------
    lam : float
        λ ≥ 0: how strongly the personal model is pulled to the global one.
    epochs : int
        Local epochs of personal training per round.
    update : callable, default local_update
        The local update for the global model.
    """

    lam: float
    epochs: int
    update: Callable = local_update
    #: the state key :func:`personalized_evaluation` starts from
    personal_state: str = PERSONAL_STATE

    def __call__(self, model, data, ins: FitIns, training: LocalTraining) -> FitRes:
        from ..optim import clip_grad_norm
        from ..train import minibatches
        from .sampling import TRAINING, make_rng

        w = model.flat_params.copy()
        res = self.update(model, data, ins, training)
        if res.delta is None:
            return res
        model.flat_params[...] = ins.state.get(PERSONAL_STATE, w)
        rng = make_rng(ins.seed, ins.server_round + DITTO_ROUND_OFFSET, TRAINING, ins.client_id)
        for _ in range(self.epochs):
            for idx in minibatches(data.num_train, training.batch_size,
                                   rng if data.num_train > training.batch_size else None):
                lengths = None if data.lengths_train is None else data.lengths_train[idx]
                model.loss_and_grad(data.x_train[idx], data.y_train[idx], lengths)
                if training.clip_norm is not None:
                    clip_grad_norm(model.flat_grads, training.clip_norm)
                grad = model.flat_grads + self.lam * (model.flat_params - w)
                model.flat_params -= (training.lr * grad).astype(model.flat_params.dtype)
        res.state = {**res.state, PERSONAL_STATE: model.flat_params.copy()}
        return res

    def describe(self) -> dict:
        """Identity in checkpoints."""
        from .identity import describe

        return {"name": "DittoUpdate", "lam": describe(self.lam), "epochs": self.epochs,
                "update": describe(self.update)}
