"""Update compression as a stage: clients send quantized or sparsified deltas.

Stochastic quantization or top-k (:mod:`npgru.fed.compress`), with error feedback: what was not
sent is kept as the client's state ``"ef_memory"`` (stored only if the round commits) and added
to its next update. The server aggregates what it decodes; ``bytes_up`` in the history is the
exact payload.
"""

from __future__ import annotations

import numpy as np

from ..._checks import InputTypeError
from ..client import ClientHook, HookContext
from ..compress import compress_with_feedback, make_compressor
from ..sampling import make_rng
from ..strategies import RoundAggregate, Strategy
from .base import SideBytes, Stage

#: random-stream purpose of stochastic quantization
COMPRESSION = 5

#: the client-state name of the error-feedback residual
MEMORY = "ef_memory"


class CompressDelta(ClientHook):
    """Replace the delta by what the server decodes from its compressed form.

    With ``error_feedback`` the client adds its residual from earlier rounds before compressing
    and keeps the new one as its state ``"ef_memory"`` (stored only if the round commits).
    """

    def __init__(self, spec: str, error_feedback: bool = True) -> None:
        self.spec = spec
        self.error_feedback = error_feedback

    def on_delta(self, delta: np.ndarray, ctx: HookContext) -> None:
        ins = ctx.ins
        rng = make_rng(ins.seed, ins.server_round, COMPRESSION, ins.client_id)
        memory = ins.state.get(MEMORY) if self.error_feedback else None
        message, residual = compress_with_feedback(delta, memory, make_compressor(self.spec), rng)
        if self.error_feedback:
            ctx.new_state[MEMORY] = residual
        delta[...] = message.decode()


class Compress(Stage):
    """Compress every client's uplink.

    Parameters
    ----------
    strategy : Strategy
        The inner strategy.
    spec : str
        ``q8``, ``q4``, ``q2`` or ``topk:FRACTION``.
    error_feedback : bool, default True
        Keep each client's compression residual across rounds.
    """

    prefix = "compress"

    def __init__(self, strategy: Strategy, spec: str, *, error_feedback: bool = True) -> None:
        make_compressor(spec)  # validate now
        if not isinstance(error_feedback, bool):
            raise InputTypeError(f"error_feedback must be a bool, got {type(error_feedback).__name__}")
        self.spec, self.error_feedback = spec, error_feedback
        super().__init__(strategy)

    def setup(self) -> None:
        self._payload = make_compressor(self.spec)(np.zeros(self._size), np.random.default_rng(0)).nbytes

    def upload_nbytes(self, res) -> int:
        """The compressed delta and the extras."""
        return int(self._payload + sum(v.nbytes for v in res.extras.values()))

    def client_hooks(self, server_round: int) -> tuple:
        return (CompressDelta(self.spec, self.error_feedback),)

    def begin_aggregate(self, server_round: int) -> RoundAggregate:
        agg = super().begin_aggregate(server_round)
        self._side = SideBytes()
        agg.transforms.append(self._side)
        return agg

    def commit(self, server_round: int, params: np.ndarray, agg: RoundAggregate) -> None:
        super().commit(server_round, params, agg)
        self._metrics = {"bytes_up": self._side.nbytes + agg.count * self._payload}
