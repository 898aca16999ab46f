"""Model files and PyTorch state dicts, with no pickle and no torch import.

A model file is an ``.npz`` archive: the parameters under ``param/<name>`` (PyTorch's names)
and, under ``__npgru__``, a one-element string array holding JSON ``{"format", "version",
"class", "config"}`` so :func:`load` can rebuild the architecture. Writes go to a temporary
file in the same directory and are moved into place (:func:`~npgru._atomic.write_atomic`), so
a crash leaves either the old file or the new one, never half of one. Reads use ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._atomic import write_atomic
from ._checks import InputValueError
from .models import LAYERS, MODELS, CharLM, SequenceClassifier, SequenceRegressor
from .module import Module

FORMAT, VERSION = "npgru-model", 1
META_KEY, PARAM_PREFIX = "__npgru__", "param/"
MODEL_CLASSES = MODELS  # the classes a model file may name

# what a damaged or foreign file can raise while being opened and read (zipfile raises
# NotImplementedError, a RuntimeError, for a mangled compression method or version field,
# and a mangled array header can ask for more memory than there is)
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, RuntimeError, MemoryError,
                zipfile.BadZipFile, zlib.error)


def save(model: Module, path: str | os.PathLike) -> None:
    """Write ``model`` (architecture and parameters) to ``path`` atomically.

    Parameters
    ----------
    model : GRU, LSTM, SequenceRegressor, SequenceClassifier or CharLM
    path : str or path-like
        Written exactly as given (no ``.npz`` is appended).
    """
    name = type(model).__name__
    if MODEL_CLASSES.get(name) is not type(model):
        raise TypeError(f"save supports {sorted(MODEL_CLASSES)}, got {name}")
    meta = {"format": FORMAT, "version": VERSION, "class": name, "config": model.config()}
    arrays: dict[str, Any] = {META_KEY: np.array([json.dumps(meta)])}
    arrays.update({PARAM_PREFIX + k: v for k, v in model.params.items()})
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> Module:
    """Rebuild a model saved by :func:`save`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated, corrupted, holds pickled data or object arrays, or is not an
        npgru model file (the message says which).
    """
    path = os.fspath(path)
    arrays = read_npz(path)
    if META_KEY not in arrays:
        raise InputValueError(f"{path} is not an npgru model file: it has no {META_KEY!r} entry")
    state = {k[len(PARAM_PREFIX) :]: v for k, v in arrays.items() if k.startswith(PARAM_PREFIX)}
    try:
        meta = read_meta(arrays.pop(META_KEY), FORMAT, VERSION)
        check_config_sizes(meta["config"], state)  # before the constructor allocates
        model = MODEL_CLASSES[meta["class"]](**meta["config"])
        model.load_state_dict(state)
    except (TypeError, ValueError) as e:
        raise InputValueError(f"{path} is not a valid npgru model file: {e}") from e
    extra = [k for k in arrays if not k.startswith(PARAM_PREFIX)]
    if extra:
        raise InputValueError(f"{path} is not a valid npgru model file: unexpected entries {extra}")
    return model


def check_config_sizes(config: dict, state: Mapping[str, np.ndarray]) -> None:
    """Refuse a file whose config claims sizes its own arrays do not have.

    Every size a constructor allocates by is read off the parameter arrays first (hidden and
    input size from the recurrent weights, layers from their count, head and embedding sizes
    from theirs), so a crafted header can never make the loader allocate more than the file's
    arrays justify.
    """
    hh = next((k for k in state if k.endswith("weight_hh_l0")), None)
    prefix = "" if hh is None else hh[: -len("weight_hh_l0")]
    pattern = re.compile(re.escape(prefix) + r"weight_ih_l(\d+)$")

    def dim(key: str, axis: int):
        a = state.get(key)
        return None if a is None or a.ndim <= axis else int(a.shape[axis])

    actual = {
        "hidden_size": dim(f"{prefix}weight_hh_l0", 1),
        "input_size": dim(f"{prefix}weight_ih_l0", 1),
        "num_layers": sum(bool(pattern.match(k)) for k in state) or None,
        "output_size": dim("fc.weight", 0),
        "num_classes": dim("fc.weight", 0),
        "vocab_size": dim("embed.weight", 0),
        "embed_dim": dim("embed.weight", 1),
    }
    for name, size in actual.items():
        if name in config and config[name] != size:
            raise ValueError(f"its config says {name}={config[name]!r}, but its arrays have "
                             f"{'no such entry' if size is None else size}")


def read_npz(path: str, what: str = "npgru model file") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path``, read without unpickling anything.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged, truncated, holds pickled data or is not an ``.npz`` archive
        (an :class:`~npgru._checks.InputValueError` naming the file and what is wrong).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such {what}: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise ValueError("it is a single .npy array, not an .npz archive")
        if magic[:2] != b"PK":  # numpy would try it as a pickle and advise allow_pickle
            raise ValueError("it is not an .npz (zip) archive")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except _READ_ERRORS as e:
        reason = str(e)
        if "pickle" in reason:  # numpy's message advises loading it unsafely: never
            reason = "it holds object arrays (pickled data), which npgru never loads"
        raise InputValueError(f"cannot read {path} as an {what}: {reason}") from e


def read_meta(entry: np.ndarray | None, fmt: str, version: int) -> dict:
    """The JSON header of an npgru ``.npz`` file, checked: format, version, class and config.

    Shared by model files and quantized weight files (:mod:`npgru.quantize`).
    """
    if entry is None:
        raise ValueError(f"no {META_KEY!r} entry")
    if entry.dtype.kind != "U" or entry.shape != (1,):
        raise ValueError(f"{META_KEY} must be a one-element string array")
    meta = json.loads(str(entry[0]))
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(f"{META_KEY} does not describe an {fmt!r} file")
    if meta.get("version") != version:
        raise ValueError(f"format version {meta.get('version')!r} is not supported ({version})")
    if meta.get("class") not in MODEL_CLASSES or not isinstance(meta.get("config"), dict):
        raise ValueError(f"unknown model class {meta.get('class')!r}")
    return meta


# -- PyTorch state dicts ----------------------------------------------------------------
def to_torch_state_dict(model: Module, part: str | None = None) -> dict[str, np.ndarray]:
    """The parameters as ``{PyTorch name: array}`` (copies), ready for ``torch.from_numpy``.

    Parameters
    ----------
    model : Module
        A GRU (LSTM) gives ``nn.GRU``'s (``nn.LSTM``'s) layout; a ready model gives the seed's
        ``GRUModel`` layout (``gru.*`` or ``lstm.*``, ``fc.*``, and ``embed.*`` for
        :class:`CharLM`).
    part : str, optional
        Only this child's entries, without its prefix: ``part="gru"`` gives a ready model's
        GRU in ``nn.GRU``'s layout (``part="lstm"`` an LSTM model's).
    """
    state = model.state_dict()
    if part is None:
        return state
    prefix = part + "."
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise ValueError(f"{type(model).__name__} has no part {part!r}")
    return sub


def from_torch_state_dict(state: Mapping, model_class: type | None = None, **kwargs) -> Module:
    """Build a model from a PyTorch state dict given as ``{name: array}``.

    The architecture (sizes, layers, direction, bias) is read off the names and shapes.

    Parameters
    ----------
    state : mapping of str -> array_like
        ``nn.GRU`` or ``nn.LSTM`` keys (``weight_ih_l0`` …; 3 or 4 gate blocks tell which) or
        the seed's ``GRUModel`` keys (``gru.*`` or ``lstm.*``, ``fc.*``; with ``embed.*``, a
        :class:`CharLM`). Tensors must be converted first, e.g.
        ``{k: v.numpy() for k, v in sd.items()}``.
    model_class : type, optional
        For ``gru.*``/``lstm.*`` with ``fc.*`` dicts: :class:`SequenceRegressor` (default, the
        seed's model) or :class:`SequenceClassifier`.
    **kwargs
        Further constructor arguments that names and shapes cannot tell: ``dtype``,
        ``variant``, ``batch_first`` (GRU only), ``dropout``.

    Raises
    ------
    ValueError
        If the names or shapes are not those of a supported GRU or LSTM model.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
    state = {str(k): np.asarray(v) for k, v in state.items()}
    cell = next((c for c in LAYERS if f"{c}.weight_ih_l0" in state), None)
    if cell is None:
        arch = _rnn_arch(state, "")
        model = LAYERS[arch.pop("cell")](**arch, **kwargs)
    else:
        arch = _rnn_arch(state, f"{cell}.")
        if arch["cell"] != cell:
            raise ValueError(f"{cell}.* keys hold a {arch['cell']}'s weights")
        del arch["bias"]  # the ready models always have biases; a bias-free dict fails to load
        out = _shape(state, "fc.weight", 2)[0]
        if "embed.weight" in state:
            V, E = _shape(state, "embed.weight", 2)
            del arch["input_size"]
            model = CharLM(V, E, **arch, **kwargs)
        elif model_class in (None, SequenceRegressor):
            model = SequenceRegressor(output_size=out, **arch, **kwargs)
        elif model_class is SequenceClassifier:
            model = SequenceClassifier(num_classes=out, **arch, **kwargs)
        else:
            raise ValueError(f"model_class must be SequenceRegressor or SequenceClassifier, "
                             f"got {model_class!r}")
    model.load_state_dict(state)
    return model


def _rnn_arch(state: dict, prefix: str) -> dict:
    """Cell, sizes, layers, direction and bias of the recurrent layer whose keys start with
    ``prefix``; the cell is told by its gate count (weight rows per hidden unit)."""
    w_ih = _shape(state, f"{prefix}weight_ih_l0", 2)
    w_hh = _shape(state, f"{prefix}weight_hh_l0", 2)
    H = w_hh[1]
    cells = {layer.cell.gates: name for name, layer in LAYERS.items()}
    if H == 0 or w_hh[0] != w_ih[0] or w_hh[0] % H or w_hh[0] // H not in cells:
        raise ValueError(
            f"{prefix}weight_ih_l0 {w_ih} and {prefix}weight_hh_l0 {w_hh} are neither a GRU's "
            "(3·hidden_size rows: gates r, z, n) nor an LSTM's (4·hidden_size: i, f, g, o)"
        )
    pattern = re.compile(re.escape(prefix) + r"weight_ih_l(\d+)$")
    layers = sorted(int(m.group(1)) for k in state if (m := pattern.match(k)))
    if layers != list(range(len(layers))):
        raise ValueError(f"layers must be numbered 0, 1, …; found {layers}")
    return dict(cell=cells[w_hh[0] // H], input_size=w_ih[1], hidden_size=H,
                num_layers=len(layers),
                bias=f"{prefix}bias_ih_l0" in state,
                bidirectional=f"{prefix}weight_ih_l0_reverse" in state)


def _shape(state: dict, key: str, ndim: int) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"state dict has no {key!r}; keys: {sorted(state)[:8]}…")
    shape = state[key].shape
    if len(shape) != ndim:
        raise ValueError(f"{key} must be {ndim}-D, got shape {shape}")
    return shape
