"""Shared fixtures. NPGRU_REQUIRE=torch,numba turns a missing optional package into a failure."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

import npgru

REQUIRED = {s.strip() for s in os.environ.get("NPGRU_REQUIRE", "").split(",") if s.strip()}


def require(name: str):
    """Import an optional package; skip without it, or fail if NPGRU_REQUIRE names it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if name in REQUIRED:
            pytest.fail(f"{name} is required (NPGRU_REQUIRE) but cannot be imported")
        pytest.skip(f"{name} not installed")


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Run the test under each backend, restoring the previous choice afterwards."""
    if request.param == "numba":
        require("numba")
    previous = npgru.get_backend()
    npgru.set_backend(request.param)
    yield request.param
    npgru.set_backend(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
