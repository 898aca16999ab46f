"""The timed workloads: the same computation built for npgru and for PyTorch.

Each ``build_*`` function returns a zero-argument callable that does one unit of work (one
forward, one forward+backward, one streaming step of every layer, one training step of the
paper's character model). The npgru and torch versions share weights, inputs and output
gradients, so both sides compute the same numbers. Only the contender's own library is
imported: a worker process times one library alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: name: (B, T, D, H, layers); float32, batch_first
CONFIGS: dict[str, tuple[int, int, int, int, int]] = {
    "seed": (64, 50, 10, 64, 2),
    "LEAF": (32, 80, 8, 256, 2),
    "large": (128, 100, 64, 512, 1),
    "device": (1, 100, 10, 64, 1),
    "tiny": (16, 20, 4, 32, 1),
}

#: the federated client's workload (McMahan et al. 2017 Shakespeare, LEAF's alphabet):
#: embedding 8 → GRU 2×256 → linear over 80 symbols, batch 10 of 80 characters, plain SGD
CHARLM = {"vocab": 80, "embed": 8, "hidden": 256, "layers": 2, "B": 10, "T": 80}
CHARLM_LR = 1.0

#: the operations timed on every config, and the one on the paper model
OPS = ("forward", "forward_backward", "step")
CHARLM_OP = "charlm_step"


def _data(cfg):
    B, T, D, H, L = cfg
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, D), dtype=np.float32)
    dout = rng.standard_normal((B, T, H), dtype=np.float32)
    return x, dout


def _npgru_weights(cfg) -> dict[str, np.ndarray]:
    """The shared initial weights (npgru's seeded initialisation, PyTorch's key names)."""
    import npgru

    B, T, D, H, L = cfg
    return npgru.GRU(D, H, L, batch_first=True, dtype=np.float32, seed=0).state_dict()


def _charlm_batch():
    rng = np.random.default_rng(2)
    shape = (CHARLM["B"], CHARLM["T"])
    return rng.integers(0, CHARLM["vocab"], shape), rng.integers(0, CHARLM["vocab"], shape)


def charlm_sgd_step() -> tuple[Callable[[], object], Any]:
    """The paper CharLM's SGD step (loss, backward, update) as a callable, and the model."""
    import npgru
    from npgru.optim import SGD

    model = npgru.CharLM(CHARLM["vocab"], CHARLM["embed"], CHARLM["hidden"],
                         num_layers=CHARLM["layers"], seed=0)
    opt = SGD(model, lr=CHARLM_LR)
    X, y = _charlm_batch()

    def step():
        model.loss_and_grad(X, y)
        opt.step()

    return step, model


# -- npgru --------------------------------------------------------------------------------
def build_npgru(op: str, cfg) -> Callable[[], object]:
    """One unit of ``op`` on npgru (the backend is chosen by the caller)."""
    import npgru

    if op == CHARLM_OP:
        return charlm_sgd_step()[0]
    B, T, D, H, L = cfg
    gru = npgru.GRU(D, H, L, batch_first=True, dtype=np.float32, seed=0)
    x, dout = _data(cfg)
    if op == "forward":
        def forward():
            gru.forward(x)
            gru._cache = None  # forward alone: drop what backward would need

        return forward
    if op == "forward_backward":
        def forward_backward():
            gru.forward(x)
            gru.backward(dout)

        return forward_backward
    if op == "step":
        h = np.zeros((L, B, H), dtype=np.float32)
        out = np.empty_like(h)
        xt = np.ascontiguousarray(x[:, 0])
        return lambda: gru.step(xt, h, out=out)
    raise ValueError(f"unknown op {op!r}")


# -- torch --------------------------------------------------------------------------------
def build_torch(op: str, cfg) -> Callable[[], object]:
    """One unit of ``op`` on ``torch.nn`` with the same weights and data as npgru's."""
    import torch

    if op == CHARLM_OP:
        import npgru

        ref = npgru.CharLM(CHARLM["vocab"], CHARLM["embed"], CHARLM["hidden"],
                           num_layers=CHARLM["layers"], seed=0)
        model = torch.nn.ModuleDict({
            "embed": torch.nn.Embedding(CHARLM["vocab"], CHARLM["embed"]),
            "gru": torch.nn.GRU(CHARLM["embed"], CHARLM["hidden"], CHARLM["layers"],
                                batch_first=True),
            "fc": torch.nn.Linear(CHARLM["hidden"], CHARLM["vocab"]),
        })
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ref.state_dict().items()})
        opt = torch.optim.SGD(model.parameters(), lr=CHARLM_LR)
        X, y = (torch.from_numpy(a) for a in _charlm_batch())
        loss_fn = torch.nn.CrossEntropyLoss()
        V = CHARLM["vocab"]

        def charlm_step():
            opt.zero_grad(set_to_none=True)
            out, _ = model["gru"](model["embed"](X))
            loss = loss_fn(model["fc"](out).reshape(-1, V), y.reshape(-1))
            loss.backward()
            opt.step()

        return charlm_step
    B, T, D, H, L = cfg
    sd = {k: torch.from_numpy(v.copy()) for k, v in _npgru_weights(cfg).items()}
    x_np, dout_np = _data(cfg)
    x, dout = torch.from_numpy(x_np), torch.from_numpy(dout_np)
    if op in ("forward", "forward_backward"):
        gru = torch.nn.GRU(D, H, L, batch_first=True)
        gru.load_state_dict(sd)
        if op == "forward":
            def forward():
                with torch.no_grad():
                    gru(x)

            return forward
        x_req = x.clone().requires_grad_(True)

        def forward_backward():
            for p in gru.parameters():
                p.grad = None
            x_req.grad = None
            out, _ = gru(x_req)
            out.backward(dout)

        return forward_backward
    if op == "step":
        cells = []
        for k in range(L):
            cell = torch.nn.GRUCell(D if k == 0 else H, H)
            cell.load_state_dict({n: sd[f"{n}_l{k}"] for n in
                                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            cells.append(cell)
        x0 = x[:, 0].contiguous()
        hs = [torch.zeros(B, H) for _ in range(L)]

        def step():
            with torch.no_grad():
                inp = x0
                for k in range(L):
                    inp = cells[k](inp, hs[k])

        return step
    raise ValueError(f"unknown op {op!r}")


def gemm_flops(op: str, cfg) -> float:
    """GEMM flops of one unit of ``op`` (multiply-adds × 2; element-wise work not counted).

    Forward: per layer the input projection ``2·B·T·D_in·3H`` and the hidden products
    ``2·B·T·H·3H``. Backward has two GEMMs per forward one (data and weight gradients), so
    forward+backward is 3× the forward. The CharLM step adds its output layer (3 × 2·B·T·H·V).
    """
    if op == CHARLM_OP:
        c = CHARLM
        B, T, H, V = c["B"], c["T"], c["hidden"], c["vocab"]
        gru = sum(2 * 3 * H * ((c["embed"] if k == 0 else H) + H) * B * T
                  for k in range(c["layers"]))
        return 3.0 * (gru + 2 * B * T * H * V)
    B, T, D, H, L = cfg
    fwd = sum(2 * 3 * H * ((D if k == 0 else H) + H) * B * T for k in range(L))
    if op == "forward":
        return float(fwd)
    if op == "forward_backward":
        return 3.0 * fwd
    if op == "step":
        return float(fwd) / T
    raise ValueError(f"unknown op {op!r}")
