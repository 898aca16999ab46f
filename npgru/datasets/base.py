"""The shape every federated dataset takes: one :class:`ClientData` per client.

Datasets (``npgru.datasets``) produce them; partitioners and the simulator (``npgru.fed``)
consume them. Arrays are NumPy; ``x`` is ``(N, T, D)`` floats or ``(N, T)`` token ids, ``y``
whatever the model's loss expects (targets, class ids, next-token ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClientData:
    """One client's local data: a train split and a test split."""

    client_id: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    lengths_train: np.ndarray | None = None
    lengths_test: np.ndarray | None = None

    @property
    def num_train(self) -> int:
        return int(len(self.x_train))

    @property
    def num_test(self) -> int:
        return int(len(self.x_test))

    def __repr__(self) -> str:  # counts and shapes, not the arrays
        return (f"ClientData({self.client_id!r}, train={self.num_train}, test={self.num_test}, "
                f"x={self.x_train.shape[1:]} {self.x_train.dtype})")


@dataclass
class FederatedData:
    """Clients plus what describes the task (vocabulary, number of classes, …)."""

    clients: list[ClientData]
    task: str  # "next-token", "classification" or "regression"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clients)

    def __repr__(self) -> str:  # a summary: the default Shakespeare load's arrays run to millions
        train = sum(c.num_train for c in self.clients)
        test = sum(c.num_test for c in self.clients)
        return (f"FederatedData(clients={len(self.clients)}, train={train}, test={test}, "
                f"task={self.task!r}, meta={sorted(self.meta)})")

    def pooled(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """All clients' ``split`` examples concatenated (centralised evaluation/training)."""
        xs = [getattr(c, f"x_{split}") for c in self.clients]
        ys = [getattr(c, f"y_{split}") for c in self.clients]
        return np.concatenate(xs), np.concatenate(ys)
