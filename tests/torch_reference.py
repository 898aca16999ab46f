"""PyTorch twins of the ready models, for the parity tests (imported only where torch is)."""

from __future__ import annotations

import numpy as np

from .conftest import require


def require_torch():
    """``require("torch")``, held to one thread: at these tiny sizes a second thread only adds
    OpenMP hand-offs, which on a loaded 2-core machine stall for whole seconds."""
    torch = require("torch")
    torch.set_num_threads(1)
    return torch


def gru_model(torch, model, dtype=None):
    """The seed's ``GRUModel`` (nn.GRU(batch_first=True) + nn.Linear on the last output; with
    ``model.cell == "lstm"`` an nn.LSTM under ``lstm``), loaded with ``model``'s parameters;
    ``lengths`` picks each sequence's own last output."""
    rnn_class = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[model.cell]

    class GRUModel(torch.nn.Module):
        def __init__(self, input_size, hidden_size, output_size, num_layers):
            super().__init__()
            # named as npgru names it (gru / lstm), so the state-dict keys are the same
            setattr(self, model.cell, rnn_class(input_size, hidden_size, num_layers,
                                                batch_first=True))
            self.fc = torch.nn.Linear(hidden_size, output_size)

        def forward(self, x, lengths=None):
            if lengths is None:
                out, _ = getattr(self, model.cell)(x)
                return self.fc(out[:, -1, :])
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
            out, _ = getattr(self, model.cell)(packed)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
            return self.fc(out[torch.arange(len(x)), torch.as_tensor(lengths) - 1])

    ref = GRUModel(model.input_size, model.hidden_size, model.fc.out_features, model.num_layers)
    ref = ref.to(dtype or (torch.float64 if model.dtype == np.float64 else torch.float32))
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return ref
