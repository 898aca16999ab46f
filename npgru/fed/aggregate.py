"""Streaming aggregation: a running weighted sum in a fixed order, memory O(model).

FedAvg's aggregate is Δ = Σ_k w_k Δ_k with w_k = n_k / Σ_j n_j (``weighted=True``) or 1/K
(``weighted=False``, the founding document's plain mean). Updates are added one at a time in
the order the round loop hands them over (the sampling order), so the sum — and hence the
model — does not depend on which worker finished first.

The sum is kept in float64. Deltas of float32 models arrive as exact float64 differences, so
with one client n·Δ/n gives Δ back exactly and FedAvg with one client reproduces a centralized
step bit for bit; with many, the model is the once-rounded weighted mean of the client models.

Anything with ``add(vector, weight)``, ``count`` and ``result()`` is an aggregator; robust ones
(median, trimmed mean, Krum) can buffer what they need behind the same three members.
"""

from __future__ import annotations

import numpy as np


class WeightedMean:
    """A streaming (weighted) mean of equally sized vectors.

    Parameters
    ----------
    size : int
        Length of every vector.
    weighted : bool, default True
        Weight each vector by the ``weight`` passed to :meth:`add` (its example count); when
        False every vector counts once.
    """

    def __init__(self, size: int, weighted: bool = True):
        self.size = int(size)
        self.weighted = bool(weighted)
        self._sum = np.zeros(self.size, dtype=np.float64)
        self._scratch = np.empty(self.size, dtype=np.float64)
        self.count = 0
        self.total_weight = 0.0

    def add(self, vector: np.ndarray, weight: float = 1.0) -> None:
        """Add one vector with its weight (ignored when ``weighted=False``).

        Raises
        ------
        ValueError
            If the vector has the wrong size or the weight is not positive and finite.
        """
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"expected a vector of shape ({self.size},), got {vector.shape}")
        w = float(weight) if self.weighted else 1.0
        if not (np.isfinite(w) and w > 0):
            raise ValueError(f"weight must be positive and finite, got {weight!r}")
        # The float64 loop whatever the vector's dtype: a float32 delta and its exact float64
        # copy (as a process executor hands it over) must give the same bits.
        np.multiply(vector, w, out=self._scratch, dtype=np.float64)
        self._sum += self._scratch
        self.count += 1
        self.total_weight += w

    def result(self) -> np.ndarray:
        """The mean so far, float64.

        Raises
        ------
        ValueError
            If nothing was added.
        """
        if self.count == 0:
            raise ValueError("no vectors were added; the mean is undefined")
        return self._sum / self.total_weight
