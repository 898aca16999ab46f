"""npgru: a from-scratch GRU in NumPy with hand-written BPTT and a federated-learning simulator.

``import npgru`` needs only NumPy; Numba kernels are used when Numba is present.
"""

from ._backend import get_backend, set_backend
from ._checks import StateError
from .gradcheck import gradcheck, gradcheck_gru, numeric_gradient, rel_error
from .gru import GRU, gru_backward, gru_forward
from .module import Module

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "Module",
    "StateError",
    "get_backend",
    "gradcheck",
    "gradcheck_gru",
    "gru_backward",
    "gru_forward",
    "numeric_gradient",
    "rel_error",
    "set_backend",
]
