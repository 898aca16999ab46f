"""The cell seam: each cell's float64 reference step pair is its layer's step and gradient, and a
kernel table with a hole is refused at import."""

from __future__ import annotations

import numpy as np
import pytest

import npgru
from npgru import kernels as NK
from npgru.cell import CellKernels, check_tables

B, D, H = 3, 4, 5
LAYERS = {
    "gru": lambda bias: npgru.GRU(D, H, bias=bias, dtype=np.float64, seed=1),
    "gru_classic": lambda bias: npgru.GRU(D, H, bias=bias, variant="classic", dtype=np.float64,
                                          seed=1),
    "lstm": lambda bias: npgru.LSTM(D, H, bias=bias, dtype=np.float64, seed=1),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_reference_step_pair_is_the_layer_and_its_gradient(backend, name, bias):
    layer = LAYERS[name](bias)
    cell = layer.cell
    assert cell.name == name and name in NK.TABLES
    rng = np.random.default_rng(2)
    p = {k[: -len("_l0")]: v for k, v in layer.params.items()}
    x = rng.standard_normal((B, D))
    state = tuple(rng.standard_normal((B, H)) for _ in cell.states)
    new, cache = cell.step_forward(x, state, p)
    _, final = layer._forward(x[None], tuple(s[None] for s in state), None)
    for mine, theirs in zip(new, final, strict=True):
        np.testing.assert_allclose(mine, theirs[0], rtol=1e-13, atol=1e-14)
    R = [rng.standard_normal((B, H)) for _ in cell.states]
    dx, dstate, dp = cell.step_backward(tuple(R), cache)
    assert set(dp) == set(p)

    def loss() -> float:
        out, _ = cell.step_forward(x, state, p)
        return float(sum(np.sum(o * r) for o, r in zip(out, R, strict=True)))

    names = [f"{s}_prev" for s in cell.states]
    errors = npgru.gradcheck(loss, {**p, "x": x, **dict(zip(names, state, strict=True))},
                             {**dp, "x": dx, **dict(zip(names, dstate, strict=True))})
    assert max(errors.values()) <= 1e-8, errors


def test_a_kernel_table_with_a_hole_is_refused():
    good = NK.TABLES["lstm"]
    check_tables({"lstm": good}, {"lstm": good})
    with pytest.raises(TypeError, match="stream_step is not callable"):
        check_tables({"lstm": good._replace(stream_step=None)})
    with pytest.raises(TypeError, match="must be a CellKernels"):
        check_tables({"lstm": tuple(good)})
    with pytest.raises(TypeError, match="twins"):
        check_tables({"lstm": good}, {"gru": good})
    assert CellKernels._fields == ("seq_forward", "seq_backward", "forward_loop",
                                   "backward_loop", "stream_step")
