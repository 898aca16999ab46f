"""Shipped datasets and generators, each split into federated clients.

- :mod:`~npgru.datasets.shakespeare`: next-character prediction, one client per (play, role).
- :mod:`~npgru.datasets.sensors`: synthetic IoT devices, forecasting or fault detection.
"""

from __future__ import annotations

from collections.abc import Callable

from . import sensors, shakespeare
from .base import ClientData, FederatedData

DATASETS: dict[str, Callable[..., FederatedData]] = {"shakespeare": shakespeare.load,
                                                      "sensors": sensors.load}


def load(name: str, **options) -> FederatedData:
    """Load a dataset by name (``"shakespeare"`` or ``"sensors"``) with that loader's options."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](**options)


__all__ = ["DATASETS", "ClientData", "FederatedData", "load", "sensors", "shakespeare"]
