"""Shipped datasets and generators, each split into federated clients."""

from .base import ClientData, FederatedData

__all__ = ["ClientData", "FederatedData"]
