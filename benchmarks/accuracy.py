"""Print the worst gradcheck error and the worst torch-parity error of the GRU layer.

    python benchmarks/accuracy.py

Gradcheck: float64, five-point central differences, over both variants × layers {1, 2, 3} ×
uni/bidirectional × batch_first × with/without lengths × with/without bias (a representative
grid), on both backends. Parity: the same grid (torch variant) against torch.nn.GRU, float64 and
float32, when torch is installed.
"""

from __future__ import annotations

import itertools

import numpy as np

import npgru

T, B, D, H = 4, 3, 3, 4
LENGTHS = np.array([4, 1, 3])


def grid(variants=("torch", "classic")):
    for variant, L, bidir, bf, use_len, bias in itertools.product(
        variants, (1, 2, 3), (False, True), (False, True), (False, True), (True, False)
    ):
        if L == 3 and (bf or not bias):
            continue  # keep the grid representative, not the full product
        yield variant, L, bidir, bf, use_len, bias


def inputs(L, bidir, bf, seed=0):
    rng = np.random.default_rng(seed)
    dirs = 2 if bidir else 1
    x = rng.standard_normal((B, T, D) if bf else (T, B, D))
    return x, rng.standard_normal((L * dirs, B, H))


def worst_gradcheck() -> tuple[float, tuple]:
    worst, where = 0.0, None
    for case in grid():
        variant, L, bidir, bf, use_len, bias = case
        gru = npgru.GRU(D, H, L, bias=bias, batch_first=bf, bidirectional=bidir,
                        variant=variant, dtype=np.float64, seed=1)
        x, h0 = inputs(L, bidir, bf)
        errors = npgru.gradcheck_gru(gru, x, h0, LENGTHS if use_len else None)
        name = max(errors, key=errors.get)
        if errors[name] >= worst:
            worst, where = errors[name], (*case, name)
    return worst, where


def worst_parity(dtype) -> float:
    import torch

    worst = 0.0
    for _, L, bidir, bf, use_len, bias in grid(("torch",)):
        gru = npgru.GRU(D, H, L, bias=bias, batch_first=bf, bidirectional=bidir,
                        dtype=dtype, seed=1)
        ref = torch.nn.GRU(D, H, L, bias=bias, batch_first=bf, bidirectional=bidir,
                           dtype=torch.float64)
        ref.load_state_dict({k: torch.tensor(v, dtype=torch.float64)
                             for k, v in gru.state_dict().items()})
        x, h0 = inputs(L, bidir, bf)
        lengths = LENGTHS if use_len else None
        out, h_n = gru.forward(x, h0, lengths)
        rng = np.random.default_rng(2)
        dout, dh_n = rng.standard_normal(out.shape), rng.standard_normal(h_n.shape)
        dx, dh0 = gru.backward(dout, dh_n)
        xt = torch.tensor(x, requires_grad=True)
        h0t = torch.tensor(h0, requires_grad=True)
        if lengths is None:
            ot, hnt = ref(xt, h0t)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                xt, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
            po, hnt = ref(packed, h0t)
            ot, _ = torch.nn.utils.rnn.pad_packed_sequence(po, batch_first=bf, total_length=T)
        ((ot * torch.tensor(dout)).sum() + (hnt * torch.tensor(dh_n)).sum()).backward()
        pairs = [(out, ot), (h_n, hnt), (dx, xt.grad), (dh0, h0t.grad)]
        pairs += [(gru.grads[k], p.grad) for k, p in ref.named_parameters()]
        for mine, theirs in pairs:
            theirs = theirs.detach().numpy()
            err = np.max(np.abs(mine - theirs) / np.maximum(np.abs(theirs), 1.0))
            worst = max(worst, float(err))
    return worst


def main() -> None:
    backends = ["numpy"] + (["numba"] if npgru._backend.numba_available() else [])
    for backend in backends:
        npgru.set_backend(backend)
        worst, where = worst_gradcheck()
        print(f"[{backend}] worst gradcheck relative error (float64): {worst:.2e} at {where}")
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch not installed: parity skipped (pip install torch==2.13.0)")
            continue
        for dtype in (np.float64, np.float32):
            print(f"[{backend}] worst torch-parity error ({np.dtype(dtype).name}): "
                  f"{worst_parity(dtype):.2e}")


if __name__ == "__main__":
    main()
