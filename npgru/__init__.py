"""npgru: a from-scratch GRU in NumPy with hand-written BPTT and a federated-learning simulator.

``import npgru`` needs only NumPy; Numba kernels are used when Numba is present.
"""

from . import fed
from ._backend import get_backend, set_backend
from ._checks import StateError
from .gradcheck import gradcheck, gradcheck_gru, numeric_gradient, rel_error
from .gru import GRU, gru_backward, gru_forward
from .io import from_torch_state_dict, load, save, to_torch_state_dict
from .layers import Dropout, Embedding, Linear
from .lstm import LSTM
from .models import CharLM, SequenceClassifier, SequenceRegressor
from .module import Module
from .onnx_export import export_onnx
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR, clip_grad_norm
from .train import fit

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AdamW",
    "CharLM",
    "CosineAnnealingLR",
    "Dropout",
    "Embedding",
    "GRU",
    "LSTM",
    "Linear",
    "Module",
    "SGD",
    "SequenceClassifier",
    "SequenceRegressor",
    "StateError",
    "StepLR",
    "clip_grad_norm",
    "export_onnx",
    "fed",
    "fit",
    "from_torch_state_dict",
    "get_backend",
    "gradcheck",
    "gradcheck_gru",
    "gru_backward",
    "gru_forward",
    "load",
    "numeric_gradient",
    "rel_error",
    "save",
    "set_backend",
    "to_torch_state_dict",
]
