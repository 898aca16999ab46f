"""Extra client hooks as a stage, e.g. simulated attackers (:class:`~npgru.fed.UpdateAttack`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..._checks import InputTypeError
from ..client import ClientHook
from ..strategies import Strategy
from .base import Stage


class WithHooks(Stage):
    """Add client hooks after the inner strategy's (attacks, custom transforms of the delta).

    Parameters
    ----------
    strategy : Strategy
        The inner strategy.
    hooks : sequence of ClientHook
        Applied in order on every client, after the inner strategy's hooks.
    """

    prefix = "hooks"

    def __init__(self, strategy: Strategy, hooks: Sequence[ClientHook]) -> None:
        hooks = tuple(hooks)
        for i, hook in enumerate(hooks):
            if not isinstance(hook, ClientHook):
                raise InputTypeError(f"hooks[{i}] must be a ClientHook, got {type(hook).__name__}")
        self.hooks = hooks
        super().__init__(strategy)

    def check_compatible(self, other: Strategy, inside: bool) -> None:
        """Any number of hook stages compose."""

    def client_hooks(self, server_round: int) -> tuple:
        return self.hooks
