"""ONNX export of the recurrent layers and the ready models, for ONNX runtimes on servers and
devices.

The graph uses standard operators only: ``Gather`` for an embedding, one ``GRU`` or ``LSTM``
node per layer (both directions in one node), ``Gemm``/``MatMul`` for the head, and ``GatherND`` to pick each
sequence's last valid output. The layout facts (from the ONNX operator specification of
``GRU`` and PyTorch's own exporter):

- ONNX stacks the gate blocks as ``z, r, h``; npgru (as PyTorch) as ``r, z, n``, so the row
  blocks are reordered, never transposed. ``W`` is ``[dirs, 3H, D]``, ``R`` is ``[dirs, 3H, H]``
  and ``B`` is ``[dirs, 6H]`` = ``[b_ih; b_hh]``, forward direction first.
- ``variant="torch"`` is ``linear_before_reset=1``. ``variant="classic"`` (reset before the
  hidden matmul) is ``linear_before_reset=0``, but ONNX updates ``H = (1−z)⊙h̃ + z⊙H_prev``
  while classic updates ``h = (1−z)⊙h_prev + z⊙h̃``: the classic ``z`` is ONNX's ``1 − z``.
  Since ``1 − σ(a) = σ(−a)``, the z-blocks of the weights and biases are exported negated.
- The ONNX ``LSTM`` stacks its gates ``i, o, f, c``; npgru (as PyTorch) ``i, f, g, o``: the
  row blocks are reordered the same way, ``B`` is ``[dirs, 8H]``, and ``c`` travels as the
  operator's ``initial_c`` / ``Y_c``.
- ``Y`` is ``[T, dirs, B, H]``; the layer output ``(T, B, dirs·H)`` is ``Y`` transposed to
  ``[T, B, dirs, H]`` and reshaped.

The ``onnx`` package is needed only here and is imported when :func:`export_onnx` runs
(``pip install npgru[onnx]``); running the file needs an ONNX runtime, not npgru.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._atomic import write_atomic
from ._checks import check_int_range
from .models import MODELS, CharLM
from .module import Module
from .recurrence import Recurrent

#: the default opset: GatherND's ``batch_dims`` needs 12; 17 is what current runtimes all run
DEFAULT_OPSET = 17

_SUPPORTED = tuple(MODELS.values())

#: per cell: the ONNX operator, npgru's gate blocks in the operator's order, the blocks whose
#: sign flips (a classic GRU's z is ONNX's 1 − z, and 1 − σ(a) = σ(−a)), and the attributes
ONNX_CELLS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any]]] = {
    "gru": ("GRU", (1, 0, 2), (), {"linear_before_reset": 1}),
    "gru_classic": ("GRU", (1, 0, 2), (1,), {"linear_before_reset": 0}),
    "lstm": ("LSTM", (0, 3, 1, 2), (), {}),
}


def export_onnx(
    model: Module,
    path: str | os.PathLike,
    *,
    lengths: bool = False,
    initial_state: bool = False,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Write ``model`` as an ONNX file that computes what its ``forward`` computes.

    The batch size and the number of steps are dynamic. Weights are stored as float32, the type
    ONNX runtimes implement ``GRU`` for (a float64 model is rounded). Dropout is not exported:
    the file is the model in evaluation mode.

    Parameters
    ----------
    model : GRU, LSTM, SequenceRegressor, SequenceClassifier or CharLM
    path : str or path-like
        Written atomically (a temporary file in the same directory, then renamed).
    lengths : bool, default False
        Add an input ``lengths`` (int64, ``(B,)``) for right-padded batches, with npgru's
        (PyTorch's packed) semantics: states stop at each sequence's end, padded outputs are
        zero, the reverse direction starts at each sequence's own last step, and the
        regressor/classifier read each sequence's last valid output. Without it every sequence
        runs all ``T`` steps.
    initial_state : bool, default False
        Add an input ``h0`` (float32, ``(num_layers·dirs, B, H)``; and ``c0`` for an LSTM);
        without it states start at zero.
    opset : int, default 17
        ONNX opset version, at least 12.

    Notes
    -----
    Inputs, in order: ``input`` — float32 ``(T, B, D)`` for a GRU (``(B, T, D)`` with
    ``batch_first``), float32 ``(B, T, D)`` for the regressor/classifier, int64 token ids
    ``(B, T)`` for CharLM — then ``lengths`` and ``h0`` (``c0``) when asked for. Outputs:
    ``output`` and ``h_n`` (and ``c_n`` for an LSTM) for a layer (as its ``forward``),
    ``output`` (predictions ``(B, out)``, logits ``(B, num_classes)`` or ``(B, T, vocab_size)``)
    and ``h_n`` (``c_n``) for the ready models.

    Raises
    ------
    ImportError
        If the ``onnx`` package is missing.
    TypeError
        If ``model`` is not one of the supported classes.
    ValueError
        If ``opset`` is below 12.
    """
    if not isinstance(model, _SUPPORTED):
        names = ", ".join(c.__name__ for c in _SUPPORTED)
        raise TypeError(f"export_onnx supports {names}; got {type(model).__name__}")
    opset = check_int_range("opset (GatherND batch_dims needs 12)", opset, 12)
    onnx = _import_onnx()
    graph = _Graph(onnx)
    rnn = model if isinstance(model, Recurrent) else model.rnn
    inputs = [_input_info(onnx, model)]
    seq_lens = None
    if lengths:
        inputs.append(onnx.helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64, ["B"]))
        seq_lens = graph.node("Cast", ["lengths"], to=onnx.TensorProto.INT32)
    state_dims = [rnn.num_layers * rnn.num_directions, "B", rnn.hidden_size]
    states = rnn.cell.states  # ("h",) or ("h", "c")
    if initial_state:
        inputs += [onnx.helper.make_tensor_value_info(f"{s}0", onnx.TensorProto.FLOAT, state_dims)
                   for s in states]

    if isinstance(model, Recurrent):
        x = graph.node("Transpose", ["input"], perm=[1, 0, 2]) if rnn.batch_first else "input"
    elif isinstance(model, CharLM):
        # look up the time-major ids, so the GRU gets (T, B, E) without a float transpose
        ids = graph.node("Transpose", ["input"], perm=[1, 0])
        x = graph.node("Gather", [graph.const("embed.weight", model.params["embed.weight"]), ids],
                       axis=0)
    else:
        x = graph.node("Transpose", ["input"], perm=[1, 0, 2])
    y, finals = _rnn_stack(graph, rnn, x, seq_lens,
                           [f"{s}0" for s in states] if initial_state else None)

    if isinstance(model, Recurrent):
        y = graph.node("Transpose", [y], perm=[1, 0, 2]) if rnn.batch_first else y
    else:
        y = graph.node("Transpose", [y], perm=[1, 0, 2])  # (B, T, F): the models are batch-first
        if isinstance(model, CharLM):
            y = _linear(graph, model, y, rank=3)
        else:
            last = _last_output(graph, y, "lengths" if lengths else None)
            y = _linear(graph, model, last, rank=2)
    graph.node("Identity", [y], out="output")
    outputs = [
        onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, _output_dims(model))]
    for s, final in zip(states, finals, strict=True):
        graph.node("Identity", [final], out=f"{s}_n")
        outputs.append(onnx.helper.make_tensor_value_info(f"{s}_n", onnx.TensorProto.FLOAT,
                                                          state_dims))
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, type(model).__name__, inputs, outputs,
                               initializer=graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="npgru",
    )
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    write_atomic(path, lambda f: f.write(data))


def onnx_rnn_weights(rnn: Recurrent, layer: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One layer's ``W``, ``R``, ``B`` in the layout of the cell's ONNX operator (float32).

    Parameters
    ----------
    rnn : GRU or LSTM
    layer : int

    Returns
    -------
    W : ndarray, shape (dirs, GH, D)
    R : ndarray, shape (dirs, GH, H)
    B : ndarray, shape (dirs, 2GH), or None
        ``None`` for a layer without bias (ONNX then uses zeros).
    """
    H = rnn.hidden_size
    _, blocks_order, negated, _ = ONNX_CELLS[rnn.cell.name]
    order = np.concatenate([np.arange(k * H, (k + 1) * H) for k in blocks_order])
    sign = np.ones((len(order), 1), dtype=np.float32)
    for k in negated:
        at = blocks_order.index(k)
        sign[at * H : (at + 1) * H] = -1.0

    def blocks(name: str) -> np.ndarray:
        return np.stack([
            rnn.params[f"{name}{sfx}"].reshape(len(order), -1)[order].astype(np.float32) * sign
            for sfx in rnn._suffixes(layer)
        ])

    W, R = blocks("weight_ih"), blocks("weight_hh")
    B = np.concatenate([blocks("bias_ih"), blocks("bias_hh")], axis=1)[..., 0] if rnn.bias else None
    return W, R, B


# -- graph building ---------------------------------------------------------------------
class _Graph:
    """Nodes and initializers under construction, with unique tensor names."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def node(self, op: str, inputs: list[str], out: str | None = None, n_out: int = 1,
             **attrs) -> Any:
        """Append an ``op`` node; return its output name (a list of names when ``n_out > 1``)."""
        if out is None:
            self._count += 1
            outs = [f"{op.lower()}_{self._count}" + (f"_{i}" if n_out > 1 else "")
                    for i in range(n_out)]
        else:
            outs = [out]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outs, **attrs))
        return outs if n_out > 1 else outs[0]

    def const(self, name: str, value: np.ndarray) -> str:
        """Add ``value`` as an initializer (float arrays as float32) and return its name."""
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name


def _rnn_stack(graph: _Graph, rnn: Recurrent, x: str, seq_lens: str | None,
               initial: list[str] | None) -> tuple[str, list[str]]:
    """One ``GRU``/``LSTM`` node per layer on time-major ``x``; returns ``(Y (T, B, dirs·H),
    final states)`` (``h_n``, and ``c_n`` for an LSTM)."""
    dirs, H = rnn.num_directions, rnn.hidden_size
    op, _, _, attrs = ONNX_CELLS[rnn.cell.name]
    n_states = len(rnn.cell.states)
    direction = "bidirectional" if rnn.bidirectional else "forward"
    finals: list[list[str]] = [[] for _ in range(n_states)]
    for k in range(rnn.num_layers):
        W, R, B = onnx_rnn_weights(rnn, k)
        inputs = [x, graph.const(f"rnn.W_l{k}", W), graph.const(f"rnn.R_l{k}", R),
                  graph.const(f"rnn.B_l{k}", B) if B is not None else "", seq_lens or ""]
        if initial is not None:
            bounds = [graph.const(f"state.start_l{k}", np.array([k * dirs])),
                      graph.const(f"state.end_l{k}", np.array([(k + 1) * dirs])),
                      graph.const(f"state.axis_l{k}", np.array([0]))]
            inputs += [graph.node("Slice", [s, *bounds]) for s in initial]
        y, *last = graph.node(op, inputs, n_out=1 + n_states, hidden_size=H,
                              direction=direction, **attrs)
        for f, v in zip(finals, last, strict=True):
            f.append(v)
        # Y is [T, dirs, B, H]; the layer's output is (T, B, dirs·H), forward half first
        if dirs == 1:
            x = graph.node("Squeeze", [y, graph.const(f"axis1_l{k}", np.array([1]))])
        else:
            y = graph.node("Transpose", [y], perm=[0, 2, 1, 3])
            x = graph.node("Reshape", [y, graph.const(f"shape_l{k}", np.array([0, 0, dirs * H]))])
    return x, [f[0] if len(f) == 1 else graph.node("Concat", f, axis=0) for f in finals]


def _last_output(graph: _Graph, y: str, lengths: str | None) -> str:
    """Each sequence's last valid output ``(B, F)`` from batch-first ``y`` ``(B, T, F)``."""
    if lengths is None:
        return graph.node("Gather", [y, graph.const("last_step", np.array(-1))], axis=1)
    idx = graph.node("Sub", [lengths, graph.const("one", np.array(1))])
    idx = graph.node("Unsqueeze", [idx, graph.const("axis1", np.array([1]))])  # (B, 1)
    return graph.node("GatherND", [y, idx], batch_dims=1)


def _linear(graph: _Graph, model: Module, x: str, rank: int) -> str:
    """The ``fc`` head ``x Wᵀ + b``: ``Gemm`` on ``(B, F)``, ``MatMul`` + ``Add`` on 3-D."""
    W, b = model.params["fc.weight"], model.params.get("fc.bias")
    if rank == 2:
        inputs = [x, graph.const("fc.weight", W)] + ([graph.const("fc.bias", b)] if b is not None
                                                      else [])
        return graph.node("Gemm", inputs, transB=1)
    y = graph.node("MatMul", [x, graph.const("fc.weight_t", np.ascontiguousarray(W.T))])
    return y if b is None else graph.node("Add", [y, graph.const("fc.bias", b)])


def _input_info(onnx: Any, model: Any) -> Any:  # a model export_onnx accepts
    if isinstance(model, CharLM):
        return onnx.helper.make_tensor_value_info("input", onnx.TensorProto.INT64, ["B", "T"])
    time_major = isinstance(model, Recurrent) and not model.batch_first
    dims = ["T", "B"] if time_major else ["B", "T"]
    return onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                              [*dims, model.input_size])


def _output_dims(model: Any) -> list:  # a model export_onnx accepts
    if isinstance(model, Recurrent):
        width = model.num_directions * model.hidden_size
        return ["B", "T", width] if model.batch_first else ["T", "B", width]
    if isinstance(model, CharLM):
        return ["B", "T", model.vocab_size]
    return ["B", model.fc.out_features]


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as e:
        raise ImportError(
            "export_onnx needs the 'onnx' package: pip install npgru[onnx] (or pip install onnx)"
        ) from e
    return onnx
