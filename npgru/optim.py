"""Optimizers on the flat parameter vector, gradient-norm clipping and learning-rate schedules.

The update rules, defaults and even the order of floating-point operations are PyTorch's
(``torch.optim.SGD``, ``Adam``, ``AdamW``, single-tensor path), so a run here and a run there
agree to rounding. An optimizer's state (momentum buffer, Adam moments) is one flat array
with named views, like a model's parameters: checkpointing or shipping it is one copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ._checks import check_positive_int, check_real_range
from .module import Module


def clip_grad_norm(grads_flat: np.ndarray, max_norm: float) -> float:
    """Scale ``grads_flat`` in place so its global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the scale is ``max_norm / (norm + 1e-6)`` when that
    is below 1, so the result sits just under ``max_norm``.

    Returns
    -------
    float
        The norm before clipping (``inf``/``nan`` if the gradient is not finite; then nothing
        is scaled).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm!r}")
    norm = float(np.sqrt(np.dot(grads_flat, grads_flat)))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        grads_flat *= grads_flat.dtype.type(coef)
    return norm


class Optimizer:
    """Base class: holds the flat parameter vector, the learning rate and the flat state.

    Parameters
    ----------
    params : Module or ndarray
        A model (its ``flat_params`` are updated from its ``flat_grads``) or a flat float array
        (then pass the gradient to :meth:`step`).
    lr : float
    """

    #: names of the per-parameter state slots, each a view of length ``params.size``
    slots: tuple[str, ...] = ()

    def __init__(self, params: Module | np.ndarray, lr: float) -> None:
        if isinstance(params, Module):
            self._module: Module | None = params
            self.params = params.flat_params
        else:
            if not isinstance(params, np.ndarray) or params.ndim != 1 or params.dtype.kind != "f":
                raise TypeError(
                    "params must be a Module or a 1-D float ndarray (updated in place), "
                    f"got {type(params).__name__}"
                )
            self._module, self.params = None, params
        self.lr = _non_negative("lr", lr)
        n = self.params.size
        self.state = np.zeros(len(self.slots) * n, dtype=self.params.dtype)
        self.buffers = {s: self.state[i * n : (i + 1) * n] for i, s in enumerate(self.slots)}
        self.t = 0

    def step(self, grads: np.ndarray | None = None) -> None:
        """Apply one update to the parameters, in place.

        Parameters
        ----------
        grads : ndarray, optional
            The flat gradient; defaults to the model's ``flat_grads``. It is not modified.
        """
        if grads is None:
            if self._module is None:
                raise TypeError("step() needs grads when the optimizer was built from an array")
            grads = self._module.flat_grads
        grads = np.asarray(grads)
        if grads.shape != self.params.shape:
            raise ValueError(f"grads must have shape {self.params.shape}, got {grads.shape}")
        self.t += 1
        self._update(self.params, grads.astype(self.params.dtype, copy=False))

    def _update(self, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (moments, step count), as a freshly built optimizer."""
        self.state[...] = 0
        self.t = 0

    def state_dict(self) -> dict:
        """``{"name", "step", "lr", "state"}``: everything needed to resume, as a copy."""
        return {"name": type(self).__name__, "step": self.t, "lr": self.lr,
                "state": self.state.copy()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore from :meth:`state_dict`, checking the optimizer type and the state size."""
        if not isinstance(state, Mapping) or not {"name", "step", "lr", "state"} <= set(state):
            raise ValueError("state must be a mapping with keys 'name', 'step', 'lr', 'state'")
        name = str(np.asarray(state["name"]))
        if name != type(self).__name__:
            raise ValueError(f"state is from a {name} optimizer, not a {type(self).__name__}")
        arr = np.asarray(state["state"])
        if arr.shape != self.state.shape:
            raise ValueError(
                f"state['state'] has shape {arr.shape}, expected {self.state.shape} "
                f"({len(self.slots)} slot(s) of {self.params.size} parameters)"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("state['state'] contains NaN or Inf")
        self.state[...] = arr
        self.t = int(state["step"])
        self.lr = _non_negative("lr", float(state["lr"]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr}, step={self.t})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

    As ``torch.optim.SGD``: ``g ← g + λp``; ``b ← μb + (1−τ)g`` (``b ← g`` on the first step);
    ``g ← g + μb`` (Nesterov) or ``g ← b``; ``p ← p − ηg``.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        self.momentum = _non_negative("momentum", momentum)
        self.dampening = float(dampening)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        self.slots = ("momentum_buffer",) if self.momentum else ()
        super().__init__(params, lr)

    def _update(self, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = self.buffers["momentum_buffer"]
            if self.t == 1:
                buf[...] = g
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction and L2 weight decay, as ``torch.optim.Adam``.

    ``g ← g + λp``; ``m ← m + (1−β₁)(g − m)``; ``v ← β₂v + (1−β₂)g²``;
    ``p ← p − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)``.
    """

    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        self.betas = (float(b1), float(b2))
        self.eps = _non_negative("eps", eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        super().__init__(params, lr)

    def _update(self, p, g):
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m, v = self.buffers["exp_avg"], self.buffers["exp_avg_sq"]
        m += (1 - b1) * (g - m)
        v *= b2
        v += (1 - b2) * g * g
        step_size = self.lr / (1 - b1**self.t)
        denom = np.sqrt(v) / math.sqrt(1 - b2**self.t) + self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``.

    The parameters shrink by ``(1 − ηλ)`` before the Adam step instead of ``λp`` entering the
    gradient; the default ``weight_decay`` is PyTorch's 0.01.
    """

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class LRSchedule:
    """Base of the schedules: each :meth:`step` (once an epoch) sets the optimizer's ``lr``."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer, self.base_lr, self.epoch = optimizer, optimizer.lr, 0

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate."""
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)


class StepLR(LRSchedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs (PyTorch's ``StepLR``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size, self.gamma = check_positive_int("step_size", step_size), float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRSchedule):
    """Anneal the learning rate from its initial value to ``eta_min`` over ``T_max`` epochs.

    ``η_e = η_min + (η₀ − η_min)(1 + cos(π e / T_max)) / 2`` (the closed form of PyTorch's
    ``CosineAnnealingLR``; past ``T_max`` it rises again, as there).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        self.T_max, self.eta_min = check_positive_int("T_max", T_max), float(eta_min)

    def lr_at(self, epoch: int) -> float:
        cos = 1 + math.cos(math.pi * epoch / self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * cos / 2


def _non_negative(name: str, value) -> float:
    return check_real_range(name, value, 0)
