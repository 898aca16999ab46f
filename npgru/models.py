"""Ready models: a recurrent layer (GRU or LSTM) and a linear head, with their loss, metrics and
checks of the data.

- :class:`SequenceRegressor`: the seed's ``GRUModel`` — ``nn.GRU(batch_first=True)`` and an
  ``nn.Linear`` on the last step's output, mean squared error; same state-dict keys.
- :class:`SequenceClassifier`: the same body, softmax cross-entropy over classes.
- :class:`CharLM`: embedding → GRU → linear on every step, next-token cross-entropy, sampling.

Every model is one :class:`~npgru.module.Module` (one flat parameter and gradient vector), takes
``(B, T, ·)`` batch-first input and per-sequence ``lengths`` for right-padded batches, and has
the same surface: ``forward``/``backward``, ``loss_and_grad``, ``evaluate``, ``predict``,
``check_data`` and ``config`` (so ``type(m)(**m.config())`` rebuilds the architecture).

``cell="gru"`` (default) or ``"lstm"`` chooses the recurrent layer from :data:`LAYERS`; its
state-dict keys sit under the cell's name (``gru.*`` or ``lstm.*``, as a PyTorch model with a
``self.gru = nn.GRU(...)`` or ``self.lstm = nn.LSTM(...)`` attribute), and ``model.rnn`` is the
layer (also ``model.gru`` / ``model.lstm``). An LSTM model's ``h0`` and ``last_state`` are
``(h, c)`` pairs. :data:`MODELS` names every class that files, the CLI and exporters rebuild.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ._checks import (
    StateError,
    as_lengths,
    as_real_array,
    check_float_dtype,
    check_int_range,
    check_positive_int,
)
from ._registry import Registry
from .gru import GRU
from .layers import Dropout, Embedding, Linear, as_token_ids
from .losses import (
    accuracy,
    check_class_ids,
    length_mask,
    mse_loss,
    perplexity,
    softmax,
    softmax_cross_entropy,
)
from .lstm import LSTM
from .module import Module

#: recurrent layers by cell name: what ``cell=`` (and ``npgru … --cell``) accepts
LAYERS: Registry = Registry("cell")
LAYERS.register("gru", GRU)
LAYERS.register("lstm", LSTM)


def child_seeds(seed: int | None, n: int) -> list[int | None]:
    """``n`` independent integer seeds derived from ``seed`` (all None when ``seed`` is None)."""
    if seed is None:
        return [None] * n
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


class _RecurrentModel(Module):
    """What every ready model shares; subclasses say how a batch becomes a loss."""

    #: True when the loss is per time step (then training can cut sequences into windows)
    per_step: bool = False

    # what each model defines (its sizes, data check, forward/backward pair, loss and config)
    hidden_size: int
    check_data: Callable[..., tuple]
    forward: Callable[..., np.ndarray]
    backward: Callable[..., Any]
    _loss: Callable[..., tuple]

    def _build(self, body: dict[str, Module], rnn, fc: Linear, dropout: float,
               seed: int | None) -> None:
        self.rnn, self.fc = rnn, fc
        setattr(self, self.cell, rnn)  # model.gru / model.lstm, as the state-dict keys
        self.drop = Dropout(dropout, dtype=self.dtype, seed=seed)
        # the dropout layer has no parameters; adopting it only makes train()/eval() reach it
        self._adopt({**body, self.cell: rnn, "drop": self.drop, "fc": fc})
        self.last_state: np.ndarray | None = None
        self._cache: Any = None  # what forward keeps for backward; None once used

    def _rnn(self, input_size: int, seed: int | None):
        """The recurrent layer ``cell`` names, batch-first, sized and seeded."""
        variant = {"variant": self.variant} if self.cell == "gru" else {}
        return LAYERS[self.cell](input_size, self.hidden_size, num_layers=self.num_layers,
                                 batch_first=True, bidirectional=self.bidirectional,
                                 dropout=self.dropout, dtype=self.dtype, seed=seed, **variant)

    def _common_config(self) -> dict:
        return dict(num_layers=self.num_layers, bidirectional=self.bidirectional,
                    dropout=self.dropout, variant=self.variant, cell=self.cell,
                    dtype=self.dtype.name, seed=self.seed)

    def _store_common(self, num_layers, bidirectional, dropout, variant, cell, dtype,
                      seed) -> None:
        self.num_layers = check_positive_int("num_layers", num_layers)
        LAYERS.resolve(cell)  # ValueError naming the known cells
        if cell != "gru" and variant != "torch":
            raise ValueError(f"variant={variant!r} is a GRU setting; cell={cell!r} takes none")
        self.cell = cell
        self.bidirectional, self.dropout, self.variant = bool(bidirectional), dropout, variant
        if seed is not None:
            check_int_range("seed", seed, 0)
        self.dtype, self.seed = check_float_dtype(dtype), None if seed is None else int(seed)

    # -- training and evaluation --------------------------------------------------------
    def loss_and_grad(self, X, y, lengths=None, h0=None) -> tuple[float, dict]:
        """Forward, mean loss over the batch, backward: fills ``flat_grads``.

        Returns
        -------
        loss : float
        metrics : dict
            e.g. ``{"accuracy": …}`` for classification and next-token prediction.

        Raises
        ------
        FloatingPointError
            If the loss is NaN or Inf (then no gradient is computed).
        """
        X, y, lengths = self.check_data(X, y, lengths)
        pred = self.forward(X, lengths, h0)
        loss, dpred = self._loss(pred, y, lengths)
        if not math.isfinite(loss):
            self._cache = None
            raise FloatingPointError(f"loss is not finite ({loss})")
        self.backward(dpred)
        metrics = self.summarise({"loss": loss, **self._metrics(pred, y, lengths)})
        return loss, {k: v for k, v in metrics.items() if k != "loss"}

    def evaluate(self, X, y, lengths=None, batch_size: int = 256) -> dict:
        """Mean loss (and metrics) over a data set, in batches, in evaluation mode.

        Gradients and the training mode are left as they were.

        Returns
        -------
        dict
            ``"loss"`` and the model's metrics (``"accuracy"``; ``"perplexity"`` for CharLM).
        """
        X, y, lengths = self.check_data(X, y, lengths)
        totals: dict[str, float] = {}
        weight = 0.0
        for sl, ln, pred in self._eval_batches(X, lengths, batch_size):
            w = self.batch_weight(y[sl], ln)
            loss = self._loss(pred, y[sl], ln)[0]
            for k, v in {"loss": loss, **self._metrics(pred, y[sl], ln)}.items():
                totals[k] = totals.get(k, 0.0) + w * v
            weight += w
        return self.summarise({k: v / weight for k, v in totals.items()})

    def _eval_batches(self, X, lengths, batch_size: int) -> Iterator[tuple]:
        """``(slice, lengths, output)`` of each batch of a validated data set, in eval mode.

        Batches bound the memory the forward caches take on a large data set.
        """
        batch_size = check_positive_int("batch_size", batch_size)
        with _eval_mode(self):
            for s in range(0, len(X), batch_size):
                sl = slice(s, s + batch_size)
                ln = None if lengths is None else lengths[sl]
                yield sl, ln, self.forward(X[sl], ln)
        self._cache = None  # evaluation forwards are not meant to be backpropagated

    def _predict(self, X, lengths, batch_size: int, post) -> np.ndarray:
        X, _, lengths = self.check_data(X, None, lengths)
        return np.concatenate([post(out) for _, _, out in self._eval_batches(X, lengths,
                                                                              batch_size)])

    def batch_weight(self, y, lengths) -> float:
        """How much a batch counts in a data-set mean: its number of examples."""
        return float(len(y))

    def _metrics(self, pred, y, lengths) -> dict:
        """Metrics that average over examples like the loss (weighted by batch_weight)."""
        return {}

    def summarise(self, means: dict) -> dict:
        """Add the metrics that are functions of data-set means (none here) to ``means``."""
        return means

    def __call__(self, X, lengths=None, h0=None):
        return self.forward(X, lengths, h0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class _LastOutputModel(_RecurrentModel):
    """GRU over the sequence, then a linear head on each sequence's own last valid output."""

    _check_targets: Callable[[np.ndarray], np.ndarray]  # each model's check of y

    def __init__(self, input_size, hidden_size, out_features, num_layers, bidirectional,
                 dropout, variant, cell, dtype, seed) -> None:
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self._store_common(num_layers, bidirectional, dropout, variant, cell, dtype, seed)
        s_rnn, s_fc, s_drop = child_seeds(self.seed, 3)
        rnn = self._rnn(self.input_size, s_rnn)
        fc = Linear(self.hidden_size * rnn.num_directions, out_features, dtype=self.dtype,
                    seed=s_fc)
        self._build({}, rnn, fc, dropout, s_drop)

    def forward(self, X, lengths=None, h0=None) -> np.ndarray:
        """``X`` ``(B, T, input_size)`` → head output ``(B, out)`` from each last valid step.

        ``h0`` ``(num_layers·dirs, B, H)`` is optional (zeros); the final states are kept in
        :attr:`last_state`.
        """
        out, self.last_state = self.rnn.forward(X, h0, lengths)
        B, T, _ = out.shape
        last = np.full(B, T - 1) if lengths is None else as_lengths(lengths, B, T) - 1
        rows = np.arange(B)
        y = self.fc.forward(self.drop.forward(out[rows, last]))
        self._cache = (out.shape, rows, last)
        return y

    def backward(self, dout, dh_n=None):
        """Backpropagate ``dout`` (gradient of the head output); fills ``flat_grads``.

        Returns
        -------
        dX : ndarray, shape of ``X``
        dh0 : ndarray or None
            Gradient with respect to ``h0``; None if ``h0`` was not given.
        """
        if self._cache is None:
            raise StateError("backward needs a preceding forward: call forward(X) first")
        shape, rows, last = self._cache
        self._cache = None
        dlast = self.drop.backward(self.fc.backward(dout))
        dseq = np.zeros(shape, dtype=self.dtype)
        dseq[rows, last] = dlast
        return self.rnn.backward(dseq, dh_n)

    def check_data(self, X, y=None, lengths=None):
        """Validate a data set once: ``X`` ``(N, T, input_size)`` finite, ``y`` and ``lengths``.

        Returns
        -------
        X, y, lengths : ndarray (``y``/``lengths`` None when not given)
        """
        X = as_real_array("X", X, self.dtype, ndim=3)
        if X.shape[2] != self.input_size:
            raise ValueError(
                f"X must have shape (N, T, {self.input_size}) (input_size={self.input_size}), "
                f"got {X.shape}"
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X is empty: need at least one sequence of one step, got {X.shape}")
        lengths = as_lengths(lengths, X.shape[0], X.shape[1])
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0 or len(y) != len(X):
                raise ValueError(
                    f"X and y must hold the same number of examples, got {len(X)} and "
                    f"{'a scalar' if y.ndim == 0 else len(y)}"
                )
            y = self._check_targets(y)
        return X, y, lengths


class SequenceRegressor(_LastOutputModel):
    """The seed's ``GRUModel``: a GRU and a linear head on the last output, trained with MSE.

    State-dict keys are exactly those of ``nn.GRU(batch_first=True)`` under ``gru.`` and of
    ``nn.Linear`` under ``fc.``, so a PyTorch state dict of that model loads directly.

    Parameters
    ----------
    input_size, hidden_size : int
    output_size : int, default 1
    num_layers : int, default 1
    bidirectional : bool, default False
    dropout : float, default 0.0
        Dropout on every GRU layer's output (between layers and before the head), training only.
    variant : {"torch", "classic"}, default "torch"
        The GRU's equations (``cell="gru"`` only).
    dtype : float32 or float64, default float32
    seed : int or None
        Seeds the initialisation and the dropout masks.
    cell : {"gru", "lstm"}, default "gru"
        The recurrent layer; its keys sit under ``gru.`` or ``lstm.``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int = 1,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 variant: str = "torch", dtype=np.float32, seed: int | None = None,
                 cell: str = "gru") -> None:
        self.output_size = check_positive_int("output_size", output_size)
        super().__init__(input_size, hidden_size, self.output_size, num_layers, bidirectional,
                         dropout, variant, cell, dtype, seed)

    def _check_targets(self, y) -> np.ndarray:
        # a 1-D target is accepted for one output, as (N,) is how a single target is usually kept
        if y.ndim == 1 and self.output_size == 1:
            y = y[:, None]
        y = as_real_array("y", y, self.dtype, ndim=2)
        if y.shape[1] != self.output_size:
            raise ValueError(f"y must have shape (N, {self.output_size}), got {y.shape}")
        return y

    def _loss(self, pred, y, lengths):
        return mse_loss(pred, y)

    def predict(self, X, lengths=None, batch_size: int = 256) -> np.ndarray:
        """Predictions ``(N, output_size)``, in evaluation mode."""
        return self._predict(X, lengths, batch_size, lambda out: out)

    def config(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    output_size=self.output_size, **self._common_config())


class SequenceClassifier(_LastOutputModel):
    """A GRU and a linear head on the last output giving class logits; softmax cross-entropy.

    Parameters
    ----------
    input_size, hidden_size : int
    num_classes : int
    num_layers, bidirectional, dropout, variant, dtype, seed, cell
        As :class:`SequenceRegressor`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_classes: int,
                 num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 variant: str = "torch", dtype=np.float32, seed: int | None = None,
                 cell: str = "gru") -> None:
        self.num_classes = check_positive_int("num_classes", num_classes)
        super().__init__(input_size, hidden_size, self.num_classes, num_layers, bidirectional,
                         dropout, variant, cell, dtype, seed)

    def _check_targets(self, y) -> np.ndarray:
        return check_class_ids("y", y, self.num_classes, (len(y),))

    def _loss(self, pred, y, lengths):
        return softmax_cross_entropy(pred, y)

    def _metrics(self, pred, y, lengths) -> dict:
        return {"accuracy": accuracy(pred, y)}

    def predict_proba(self, X, lengths=None, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, num_classes)``, in evaluation mode."""
        return self._predict(X, lengths, batch_size, softmax)

    def predict(self, X, lengths=None, batch_size: int = 256) -> np.ndarray:
        """Class ids ``(N,)``: the arg-max of the logits, in evaluation mode."""
        return self._predict(X, lengths, batch_size, lambda out: np.argmax(out, axis=-1))

    def config(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_classes=self.num_classes, **self._common_config())


class CharLM(_RecurrentModel):
    """A character (token) language model: embedding → GRU → linear head on every step.

    ``X`` and ``y`` are integer token ids ``(B, T)``, ``y`` the next token of each position.
    The loss is the mean cross-entropy over real (unpadded) steps.

    Parameters
    ----------
    vocab_size, embed_dim, hidden_size : int
    num_layers, bidirectional, dropout, variant, dtype, seed, cell
        As :class:`SequenceRegressor` (a bidirectional model sees the future: it cannot
        generate).
    """

    per_step = True

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, variant: str = "torch",
                 dtype=np.float32, seed: int | None = None, cell: str = "gru") -> None:
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self._store_common(num_layers, bidirectional, dropout, variant, cell, dtype, seed)
        s_emb, s_rnn, s_fc, s_drop = child_seeds(self.seed, 4)
        embed = Embedding(self.vocab_size, self.embed_dim, dtype=self.dtype, seed=s_emb)
        rnn = self._rnn(self.embed_dim, s_rnn)
        fc = Linear(self.hidden_size * rnn.num_directions, self.vocab_size, dtype=self.dtype,
                    seed=s_fc)
        self.embed = embed
        self._build({"embed": embed}, rnn, fc, dropout, s_drop)

    def forward(self, X, lengths=None, h0=None) -> np.ndarray:
        """Token ids ``(B, T)`` → next-token logits ``(B, T, vocab_size)``.

        ``h0`` ``(num_layers·dirs, B, H)`` continues from a previous window; the final states
        are kept in :attr:`last_state` (for stateful truncated BPTT and generation).
        """
        ids = as_token_ids("X", X, self.vocab_size)
        if ids.ndim != 2:
            raise ValueError(f"X must be (B, T) token ids, got shape {ids.shape}")
        out, self.last_state = self.rnn.forward(self.embed.forward(ids), h0, lengths)
        self._cache = True
        return self.fc.forward(self.drop.forward(out))

    def backward(self, dlogits, dh_n=None):
        """Backpropagate the logits' gradient; fills ``flat_grads``.

        Returns
        -------
        dX : None
            Token ids have no gradient.
        dh0 : ndarray or None
            Gradient with respect to ``h0``; None if ``h0`` was not given.
        """
        if self._cache is None:
            raise StateError("backward needs a preceding forward: call forward(X) first")
        self._cache = None
        dseq = self.drop.backward(self.fc.backward(dlogits))
        demb, dh0 = self.rnn.backward(dseq, dh_n)
        self.embed.backward(demb)
        return None, dh0

    def check_data(self, X, y=None, lengths=None):
        """Validate token ids ``X`` ``(N, T)``, next-token ids ``y`` (same shape), ``lengths``."""
        X = as_token_ids("X", X, self.vocab_size)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X must be non-empty (N, T) token ids, got shape {X.shape}")
        lengths = as_lengths(lengths, X.shape[0], X.shape[1])
        if y is not None:
            y = np.asarray(y)
            if y.shape != X.shape:
                raise ValueError(
                    f"y (next-token ids) must have the shape of X {X.shape}, got {y.shape}"
                )
            y = check_class_ids("y", y, self.vocab_size)
        return X, y, lengths

    def _loss(self, logits, y, lengths):
        return softmax_cross_entropy(logits, y, length_mask(lengths, *y.shape))

    def _metrics(self, logits, y, lengths) -> dict:
        return {"accuracy": accuracy(logits, y, length_mask(lengths, *y.shape))}

    def batch_weight(self, y, lengths) -> float:
        """A batch counts by its number of real (unpadded) tokens."""
        return float(y.size if lengths is None else np.sum(lengths))

    def summarise(self, means: dict) -> dict:
        """Add the perplexity: exp of the mean loss (not a mean of per-batch perplexities)."""
        return {**means, "perplexity": perplexity(means["loss"])}

    def predict(self, X, lengths=None, batch_size: int = 256) -> np.ndarray:
        """The most likely next token at every position, ``(N, T)``, in evaluation mode."""
        return self._predict(X, lengths, batch_size, lambda out: np.argmax(out, axis=-1))

    def generate(self, prompt_ids, n: int, temperature: float = 1.0,
                 seed: int | None = None) -> np.ndarray:
        """Sample ``n`` tokens that continue ``prompt_ids``.

        Parameters
        ----------
        prompt_ids : array_like of int, shape (P,), P ≥ 1
        n : int
            Number of tokens to generate.
        temperature : float, default 1.0
            Logits are divided by it before the softmax; 0 picks the most likely token.
        seed : int or None
            The same seed gives the same tokens.

        Returns
        -------
        ndarray of int64, shape (n,)
            The generated tokens (without the prompt).
        """
        if self.bidirectional:
            raise ValueError("a bidirectional CharLM reads the future and cannot generate")
        prompt = np.asarray(prompt_ids)
        if prompt.ndim != 1 or prompt.size == 0:
            raise ValueError(f"prompt_ids must be a non-empty 1-D sequence, got {prompt.shape}")
        prompt = as_token_ids("prompt_ids", prompt, self.vocab_size)
        n = check_int_range("n", n, 0)
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        rng = np.random.default_rng(seed)
        tokens = np.empty(n, dtype=np.int64)
        with _eval_mode(self):
            logits = self.forward(prompt[None, :])[0, -1]
            for i in range(n):
                tokens[i] = _sample(logits, temperature, rng)
                if i + 1 < n:
                    logits = self.forward(tokens[None, i : i + 1], h0=self.last_state)[0, -1]
        self._cache = None
        return tokens

    def config(self) -> dict:
        return dict(vocab_size=self.vocab_size, embed_dim=self.embed_dim,
                    hidden_size=self.hidden_size, **self._common_config())


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(np.argmax(logits))
    p = softmax(logits.astype(np.float64) / temperature)
    # inverse-CDF sampling with one uniform draw per token: the same seed, the same text
    return int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"),
                   p.size - 1))


@contextmanager
def _eval_mode(model: Module) -> Iterator[None]:
    """Evaluation mode inside the block, the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


#: every class a model file, the CLI and the exporters rebuild by name
MODELS: Registry = Registry("model class")
for _cls in (GRU, LSTM, SequenceRegressor, SequenceClassifier, CharLM):
    MODELS.register(_cls.__name__, _cls)
