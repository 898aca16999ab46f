"""Synthetic IoT sensors: one client per device, each with its own signal, noise, gaps and faults.

Each device records one reading per step: a periodic signal (its own frequency, amplitude, phase,
offset and a weaker second harmonic) plus a linear drift and Gaussian noise. Readings go missing
at random and in short outages; faults are injected as spikes, stuck values or noise bursts.

Devices differ in level and scale, so every device's readings are divided by their own standard
deviation (measured on its training part only), and every window is expressed relative to its
last reading. The model sees two features per step: that relative reading, with gaps
forward-filled, and a missing-indicator (1.0 where the reading was filled in), so the output never
holds NaN.

Tasks: ``"forecast"`` regresses the *change* from the window's last reading to the next reading
(so persistence, "the next reading repeats the last", predicts 0 and scores
``meta["persistence_mse"]``); ``"fault"`` classifies whether a fault occurs within the window. Each
device's first 80% of steps give its training windows and the last 20% its test windows (no window
crosses the cut). Device ``k`` is generated from ``(seed, k)`` alone, so it is the same whatever
``num_devices`` is.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int_range, check_real_range
from .base import ClientData, FederatedData

__all__ = ["FEATURES", "FAULT_KINDS", "load"]

FEATURES = ("value", "missing")
FAULT_KINDS = ("spike", "stuck", "noise")
_TASKS = ("forecast", "fault")


def _check_int(name: str, value, low: int) -> None:
    check_int_range(name, value, low)


def _check_rate(name: str, value, high: float = 1.0) -> None:
    check_real_range(name, value, 0.0, high, include_high=False)


def _device(
    rng: np.random.Generator, steps: int, missing_rate: float, fault_rate: float
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One device's readings (NaN where missing), per-step fault flags and its parameters."""
    t = np.arange(steps, dtype=np.float64)
    params = {
        # steps per cycle: fast enough that a 32-step window sees a good part of one, so the
        # signal, not only the noise, separates a forecast from repeating the last reading
        "period": float(rng.uniform(8.0, 48.0)),
        "amplitude": float(rng.uniform(0.5, 2.0)),
        "phase": float(rng.uniform(0.0, 2.0 * np.pi)),
        "offset": float(rng.normal(0.0, 1.0)),
        "harmonic": float(rng.uniform(0.0, 0.4)),  # relative weight of the second harmonic
        "drift": float(rng.normal(0.0, 1.0)),  # total change over the series
        "noise": float(rng.uniform(0.02, 0.1)),
        # Devices differ in reliability: rates spread around the requested mean.
        "missing_rate": float(missing_rate * rng.uniform(0.0, 2.0)),
        "fault_rate": float(fault_rate * rng.uniform(0.25, 1.75)),
    }
    angle = 2.0 * np.pi * t / params["period"] + params["phase"]
    signal = (
        params["offset"]
        + params["amplitude"] * (np.sin(angle) + params["harmonic"] * np.sin(2.0 * angle))
        + params["drift"] * t / steps
    )
    value = signal + rng.normal(0.0, params["noise"], steps)

    faults = np.zeros(steps, dtype=bool)
    for start in np.flatnonzero(rng.random(steps) < params["fault_rate"]):
        end = min(steps, start + int(rng.integers(3, 20)))
        kind = FAULT_KINDS[int(rng.integers(len(FAULT_KINDS)))]
        if kind == "spike":
            value[start:end] += rng.choice([-1.0, 1.0]) * rng.uniform(3.0, 6.0) * params["amplitude"]
        elif kind == "stuck":
            value[start:end] = value[start]
        else:
            value[start:end] += rng.normal(0.0, 5.0 * params["noise"] + 0.5, end - start)
        faults[start:end] = True

    # Isolated dropouts plus short outages (a few steps in a row), as radio links lose packets.
    missing = rng.random(steps) < params["missing_rate"] * 0.7
    for start in np.flatnonzero(rng.random(steps) < params["missing_rate"] * 0.05):
        missing[start : start + int(rng.integers(2, 8))] = True
    value[missing] = np.nan
    return value, faults, params


def _fill(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-fill NaN (a leading gap takes the first reading) and return the missing mask."""
    missing = np.isnan(value)
    if missing.all():
        return np.zeros_like(value), missing
    last = np.where(missing, 0, np.arange(len(value)))
    np.maximum.accumulate(last, out=last)
    filled = value[last]
    first = np.flatnonzero(~missing)[0]
    filled[:first] = value[first]
    return filled, missing


def _examples(
    features: np.ndarray,
    value: np.ndarray,
    faults: np.ndarray,
    window: int,
    stride: int,
    task: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``features`` (relative to their last reading) and their targets, for one
    contiguous stretch of scaled steps."""
    steps = len(features)
    if task == "forecast":
        # Predict the change to the reading right after the window. Windows whose next reading
        # is missing are skipped (a forward-filled target would teach the model to copy the last
        # value), and so are those whose next reading is faulty: a fault's onset cannot be
        # forecast from the past, and detecting faults is the "fault" task's job.
        starts = np.arange(0, steps - window, stride)
        starts = starts[~np.isnan(value[starts + window]) & ~faults[starts + window]]
    else:
        starts = np.arange(0, steps - window + 1, stride)
    x = features[starts[:, None] + np.arange(window)]
    last = x[:, -1:, 0].copy()
    x[..., 0] -= last
    if task == "forecast":
        y = (value[starts + window] - last[:, 0]).astype(np.float32)[:, None]
    else:
        hits = np.concatenate([[0], np.cumsum(faults)])
        y = (hits[starts + window] - hits[starts] > 0).astype(np.int32)
    return x.astype(np.float32), y


def load(
    num_devices: int = 20,
    steps: int = 2_000,
    window: int = 32,
    task: str = "forecast",
    seed: int = 0,
    stride: int = 1,
    missing_rate: float = 0.05,
    fault_rate: float = 0.004,
    test_fraction: float = 0.2,
) -> FederatedData:
    """Generate the IoT sensor dataset, one client per device.

    Parameters
    ----------
    num_devices : int, default 20
        Number of devices (clients).
    steps : int, default 2000
        Readings per device.
    window : int, default 32
        Steps per example.
    task : {"forecast", "fault"}, default "forecast"
        ``"forecast"``: regress the change from the window's last reading to the reading after
        the window, in the device's scale (task ``"regression"``, ``y`` float32 ``(N, 1)``;
        windows whose next reading is missing or faulty are left out). ``"fault"``: does a fault
        occur within the window (task ``"classification"``, ``y`` int32 ``(N,)`` in {0, 1}).
    seed : int, default 0
        Seed; device ``k`` depends on ``(seed, k)`` only.
    stride : int, default 1
        Step between the starts of consecutive windows.
    missing_rate : float, default 0.05
        Mean fraction of readings lost (each device's own rate is spread around it).
    fault_rate : float, default 0.004
        Mean rate of fault onsets per step (each device's own rate is spread around it).
    test_fraction : float, default 0.2
        The final fraction of each device's steps that is its test data.

    Returns
    -------
    FederatedData
        ``x`` is float32 ``(N, window, 2)`` with features :data:`FEATURES` (the reading,
        forward-filled, divided by the device's ``scale`` and minus the window's last reading, so
        the last step is 0; and a missing-indicator), free of NaN. Clients are ``"device-000"``, …
        in order. ``meta`` holds ``features``, ``num_classes`` (fault task), ``window``,
        ``persistence_mse`` (forecast task: the pooled test MSE of predicting no change, the
        baseline a forecaster must beat) and ``devices``: each device's generating parameters, its
        ``scale`` (the standard deviation of its observed training readings) and its fraction of
        faulty and missing steps.
    """
    _check_int("num_devices", num_devices, 1)
    _check_int("steps", steps, 2)
    _check_int("window", window, 1)
    _check_int("seed", seed, 0)
    _check_int("stride", stride, 1)
    if not isinstance(task, str) or task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    _check_rate("missing_rate", missing_rate, high=0.5)
    _check_rate("fault_rate", fault_rate, high=0.5)
    _check_rate("test_fraction", test_fraction)
    if test_fraction == 0:
        raise ValueError("test_fraction must lie in (0, 1), got 0")
    cut = int(round(steps * (1.0 - test_fraction)))
    if min(cut, steps - cut) < window + 1:
        raise ValueError(
            f"each device's train ({cut} steps) and test ({steps - cut} steps) parts must be longer "
            f"than window={window}; raise steps or lower window"
        )

    clients, devices = [], []
    for k in range(num_devices):
        rng = np.random.default_rng([seed, k])
        value, faults, params = _device(rng, steps, missing_rate, fault_rate)
        observed = value[:cut][~np.isnan(value[:cut])]
        # the training part alone sets the scale, so no test reading leaks into the inputs
        scale = float(observed.std()) if observed.size > 1 and observed.std() > 0 else 1.0
        value /= scale
        filled, missing = _fill(value)
        features = np.stack([filled, missing.astype(np.float64)], axis=1)
        parts = [
            _examples(features[a:b], value[a:b], faults[a:b], window, stride, task)
            for a, b in ((0, cut), (cut, steps))
        ]
        clients.append(ClientData(f"device-{k:03d}", *parts[0], *parts[1]))
        params.update(scale=scale, fault_fraction=float(faults.mean()),
                      missing_fraction=float(missing.mean()))
        devices.append(params)

    meta = {"features": list(FEATURES), "window": window, "stride": stride, "devices": devices}
    if task == "fault":
        meta["num_classes"] = 2
        return FederatedData(clients=clients, task="classification", meta=meta)
    y_test = np.concatenate([c.y_test for c in clients])
    meta["persistence_mse"] = float(np.mean(y_test.astype(np.float64) ** 2)) if y_test.size else None
    return FederatedData(clients=clients, task="regression", meta=meta)
