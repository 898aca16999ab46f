"""Name → factory registries: one per kind of thing (strategies, defences, executors, …).

The CLI, loaders and exporters all read the same registry, so adding a thing is one
``register`` line next to its definition, and an unknown name is refused with the list of the
known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Mapping[str, F], Generic[F]):
    """An ordered mapping of names to factories of one kind of thing.

    Parameters
    ----------
    kind : str
        What the entries are ("strategy", "executor", …), for error messages.

    Examples
    --------
    >>> STRATEGIES = Registry("strategy")
    >>> @STRATEGIES.register("fedavg")
    ... class FedAvg: ...
    >>> STRATEGIES.build("fedavg")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, F] = {}

    def register(self, name: str, factory: F | None = None):
        """Add ``factory`` under ``name`` (usable as a decorator when ``factory`` is omitted).

        Raises
        ------
        ValueError
            If ``name`` is already taken.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")

        def add(f: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = f
            return f

        return add if factory is None else add(factory)

    def __getitem__(self, name: str) -> F:
        try:
            return self._factories[name]
        except (KeyError, TypeError):
            raise KeyError(self._unknown(name)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def _unknown(self, name) -> str:
        return f"unknown {self.kind} {name!r}: expected one of {', '.join(self._factories)}"

    def resolve(self, name: str) -> F:
        """The factory registered as ``name``.

        Raises
        ------
        ValueError
            If no factory has that name (the message lists the known names).
        """
        if not isinstance(name, str) or name not in self._factories:
            raise ValueError(self._unknown(name))
        return self._factories[name]

    def build(self, name: str, *args, **kwargs):
        """``resolve(name)(*args, **kwargs)``."""
        return self.resolve(name)(*args, **kwargs)

