"""Losses that return their value and their gradient together, and the metrics beside them.

Every loss is a mean (PyTorch's default ``reduction="mean"``), so a batch's gradient does not
grow with its size and a learning rate carries over between batch sizes.
"""

from __future__ import annotations

import numpy as np


def mse_loss(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over every entry, ``mean((pred − target)²)``.

    Returns
    -------
    loss : float
    dpred : ndarray, shape of ``pred``
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"target must have shape {pred.shape} (that of pred), got {target.shape}")
    diff = pred - target
    return float(np.mean(diff * diff)), (2.0 / diff.size) * diff


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log softmax`` over the last axis; shifting by the max keeps ``exp`` from overflowing."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray,
                          mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy with integer targets, averaged over the unmasked positions.

    Parameters
    ----------
    logits : ndarray, shape (..., C)
    targets : ndarray of int, shape (...)
        Class ids in ``[0, C)``.
    mask : ndarray, shape (...), optional
        1 where a position counts (a real step), 0 where it does not (padding). The mean is
        over the counted positions, as PyTorch's ``ignore_index``.

    Returns
    -------
    loss : float
    dlogits : ndarray, shape of ``logits``
        ``(softmax − onehot) · mask / Σ mask``; zero on masked positions.
    """
    logits = np.asarray(logits)
    targets = check_class_ids("targets", targets, logits.shape[-1], logits.shape[:-1])
    weight = None if mask is None else _as_mask(mask, targets.shape)
    count = targets.size if weight is None else weight.sum()
    if count == 0:
        raise ValueError("mask selects no position: there is nothing to average the loss over")
    # few passes over the (…, C) logits: the shifted logits, their exponentials (normalised in
    # place into the softmax, then the gradient), nothing else of that size
    shifted = logits - logits.max(axis=-1, keepdims=True)
    dlogits = np.exp(shifted)
    total = dlogits.sum(axis=-1, keepdims=True)
    idx = targets[..., None]
    # −log softmax at the target: log Σ exp − shifted logit
    nll = (np.log(total) - np.take_along_axis(shifted, idx, axis=-1))[..., 0]
    dlogits /= total
    np.put_along_axis(dlogits, idx, np.take_along_axis(dlogits, idx, axis=-1) - 1, axis=-1)
    if weight is None:
        dlogits *= dlogits.dtype.type(1.0 / count)
        return float(nll.sum() / count), dlogits
    dlogits *= (weight / count)[..., None].astype(logits.dtype)
    return float((nll * weight).sum() / count), dlogits


def accuracy(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of (unmasked) positions whose arg-max class is the target."""
    hit = (np.argmax(logits, axis=-1) == targets).astype(np.float64)
    if mask is None:
        return float(hit.mean())
    weight = _as_mask(mask, hit.shape)
    return float((hit * weight).sum() / weight.sum())


def perplexity(mean_cross_entropy: float) -> float:
    """``exp`` of a mean cross-entropy in nats: the effective number of equally likely choices."""
    return float(np.exp(mean_cross_entropy))


def check_class_ids(name: str, targets, num_classes: int, shape: tuple | None = None) -> np.ndarray:
    """``targets`` as int64 class ids in ``[0, num_classes)``, optionally of a given shape."""
    t = np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class ids, got dtype {t.dtype}")
    if shape is not None and t.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(
            f"{name} must be class ids in [0, {num_classes}), got min {t.min()} and max {t.max()}"
        )
    return t.astype(np.int64, copy=False)


def length_mask(lengths: np.ndarray | None, batch: int, steps: int) -> np.ndarray | None:
    """``(B, T)`` mask, 1 on each sequence's first ``lengths[b]`` steps; None without lengths."""
    if lengths is None:
        return None
    return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype(np.float64)


def _as_mask(mask, shape) -> np.ndarray:
    m = np.asarray(mask, dtype=np.float64)
    if m.shape != tuple(shape):
        raise ValueError(f"mask must have shape {tuple(shape)}, got {m.shape}")
    return m
