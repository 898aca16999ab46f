"""The base every layer and model shares: parameters as views into one flat vector.

A module's parameters (``params``) and gradients (``grads``) are named views into two
contiguous arrays, ``flat_params`` and ``flat_grads``. An optimizer step, a federated delta,
a weighted average or a norm clip is then one vector operation, and a state dict is just the
named views. A composite module (a model) re-homes its children's parameters into one flat
vector of its own, so the views stay valid all the way down.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from ._checks import InputTypeError, InputValueError, check_float_dtype


class Module:
    """Base class: named parameters and gradients as views into one flat vector each.

    Subclasses call :meth:`_init_params` with their initial values (leaf modules) or
    :meth:`_adopt` with their children (composite modules).
    """

    dtype: np.dtype
    flat_params: np.ndarray
    flat_grads: np.ndarray
    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    training: bool = True
    _children: dict[str, Module]

    # -- construction -------------------------------------------------------------------
    def _init_params(self, values: Mapping[str, np.ndarray], dtype) -> None:
        """Lay ``values`` out in one flat vector (in the given order) and keep views."""
        self.dtype = check_float_dtype(dtype)
        self._children = {}
        self._bind_new({name: np.asarray(v) for name, v in values.items()})

    def _adopt(self, children: Mapping[str, Module]) -> None:
        """Re-home the children's parameters into one flat vector owned by this module."""
        dtypes = {c.dtype for c in children.values()}
        if len(dtypes) != 1:
            raise TypeError(f"children must share one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self._children = dict(children)
        self._bind_new(
            {f"{prefix}.{name}": p for prefix, c in children.items() for name, p in c.params.items()}
        )
        for prefix, child in children.items():
            child._rebind(self, prefix + ".")

    def _bind_new(self, values: Mapping[str, np.ndarray]) -> None:
        total = sum(int(v.size) for v in values.values())
        self.flat_params = np.empty(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        self.params, self.grads = {}, {}
        offset = 0
        for name, v in values.items():
            p = self.flat_params[offset : offset + v.size].reshape(v.shape)
            p[...] = v
            self.params[name] = p
            self.grads[name] = self.flat_grads[offset : offset + v.size].reshape(v.shape)
            offset += v.size

    def _rebind(self, owner: Module, prefix: str) -> None:
        """Point this module's (and its children's) views into ``owner``'s flat vectors.

        The module's own ``flat_params``/``flat_grads`` become exactly its slice of the
        owner's (its parameters lie there contiguously, in order), so an optimizer or a norm
        given the child touches the child's parameters and nothing else.
        """
        self.params = {n: owner.params[prefix + n] for n in self.params}
        self.grads = {n: owner.grads[prefix + n] for n in self.grads}
        size = sum(int(p.size) for p in self.params.values())
        start = 0
        if self.params:
            first = next(iter(self.params.values()))
            start = (first.__array_interface__["data"][0]
                     - owner.flat_params.__array_interface__["data"][0]) // self.dtype.itemsize
        self.flat_params = owner.flat_params[start : start + size]
        self.flat_grads = owner.flat_grads[start : start + size]
        for name, child in self._children.items():
            child._rebind(owner, f"{prefix}{name}.")

    # -- public surface -----------------------------------------------------------------
    @property
    def num_params(self) -> int:
        """Number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def config(self) -> dict:
        """The constructor arguments that rebuild this architecture: ``type(m)(**m.config())``
        (what :func:`npgru.save` stores beside the parameters)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its construction")

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, view)`` pairs in flat-vector order."""
        yield from self.params.items()

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, keyed by name (PyTorch's names and shapes)."""
        return {name: p.copy() for name, p in self.params.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters, checking keys and shapes first.

        Values are cast to the module's dtype. Nothing is written unless every key and
        shape matches, so a failed load leaves the module unchanged.

        Raises
        ------
        ValueError
            On missing, unexpected or mis-shaped keys, or non-finite values.
        TypeError
            If ``state`` is not a mapping or a value is not real numeric.
        """
        if not isinstance(state, Mapping):
            raise InputTypeError(
                f"state must be a mapping of name -> array, got {type(state).__name__}")
        missing = [k for k in self.params if k not in state]
        extra = [k for k in state if k not in self.params]
        if missing or extra:
            raise InputValueError(
                f"state dict does not match {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {extra}"
            )
        arrays = {}
        for name, p in self.params.items():
            v = np.asarray(state[name])
            if v.dtype.kind not in "biuf":
                raise InputTypeError(f"state[{name!r}] must be real numeric, got dtype {v.dtype}")
            if v.shape != p.shape:
                raise InputValueError(
                    f"state[{name!r}] has shape {v.shape}, expected {p.shape}"
                )
            with np.errstate(over="ignore"):  # an overflow is what the check below reports
                cast = v.astype(self.dtype, copy=False)
            if not np.all(np.isfinite(cast)):  # after the cast: 1e300 is inf in float32
                if not np.all(np.isfinite(v)):
                    raise InputValueError(f"state[{name!r}] contains NaN or Inf")
                raise InputValueError(
                    f"state[{name!r}] has values beyond the {self.dtype} range (largest "
                    f"magnitude {float(np.max(np.abs(v))):.3g}), which become Inf")
            arrays[name] = cast
        for name, v in arrays.items():
            self.params[name][...] = v

    def zero_grad(self) -> None:
        """Set every gradient to zero."""
        self.flat_grads[...] = 0

    def train(self, mode: bool = True) -> Module:
        """Switch training mode (dropout active) on or off, for this module and its children."""
        self.training = bool(mode)
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Switch to evaluation mode (dropout off)."""
        return self.train(False)
