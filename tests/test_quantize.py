"""float16 / int8 weight files: error bounds, outputs close, smaller files, NumPy-only loading."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import npgru.io
from npgru.gru import GRU
from npgru.lstm import LSTM
from npgru.models import CharLM, SequenceClassifier, SequenceRegressor
from npgru.quantize import dequantize_int8, load_quantized, quantize_int8, save_quantized
from npgru.recurrence import Recurrent


def test_int8_error_within_half_a_step(rng):
    # rows of very different magnitudes: per-row scales keep the small rows precise
    w = rng.standard_normal((6, 50)) * np.array([1e-3, 0.1, 1, 10, 100, 0])[:, None]
    q, scale = quantize_int8(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (6,)
    assert np.abs(q).max() <= 127
    err = np.abs(dequantize_int8(q, scale, np.float64) - w)
    assert np.all(err <= scale[:, None] / 2 * (1 + 1e-6))
    assert np.all(q[5] == 0)  # an all-zero row stays zero
    # the largest entry of each non-zero row maps to ±127: the whole int8 range is used
    assert np.all(np.abs(q[:5]).max(axis=1) == 127)


def test_int8_rejects_bad_input():
    with pytest.raises(ValueError, match="matrix"):
        quantize_int8(np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        quantize_int8(np.array([[1.0, np.nan]]))


MODELS = [
    lambda: GRU(4, 16, num_layers=2, bidirectional=True, seed=0),
    lambda: SequenceRegressor(2, 32, num_layers=2, seed=1),
    lambda: SequenceClassifier(3, 24, num_classes=5, variant="classic", seed=2),
    lambda: CharLM(30, 8, 32, seed=3),
    lambda: LSTM(4, 16, num_layers=2, bidirectional=True, seed=4),
    lambda: CharLM(30, 8, 32, cell="lstm", seed=5),
]


def _inputs(model, rng):
    if isinstance(model, CharLM):
        return (rng.integers(0, 30, size=(5, 12)),)
    if isinstance(model, Recurrent):
        return (rng.standard_normal((12, 5, 4)).astype(np.float32),)
    return (rng.standard_normal((5, 12, model.input_size)).astype(np.float32),
            np.array([12, 3, 7, 1, 12]))


def _output(model, args):
    out = model.forward(*args) if not isinstance(model, Recurrent) else model.forward(args[0])[0]
    return np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize("make", MODELS, ids=["gru", "regressor", "classifier", "charlm", "lstm",
                                              "lstm-charlm"])
@pytest.mark.parametrize("scheme, tol", [("float16", 5e-3), ("int8", 5e-2)])
def test_round_trip_predicts_close(tmp_path, rng, make, scheme, tol):
    model = make().eval()
    path = tmp_path / f"{scheme}.npz"
    save_quantized(model, path, scheme)
    loaded = load_quantized(path).eval()
    assert type(loaded) is type(model) and loaded.config() == model.config()
    for key, p in model.params.items():
        q = loaded.params[key]
        if scheme == "int8" and p.ndim == 2:
            bound = np.abs(p).max(axis=1, keepdims=True) / 127 / 2
            assert np.all(np.abs(q - p) <= bound * (1 + 1e-5) + 1e-12), key
        elif scheme == "int8":
            np.testing.assert_array_equal(q, p)  # biases stay float32
        else:
            np.testing.assert_array_equal(q, p.astype(np.float16).astype(np.float32))
    args = _inputs(model, rng)
    np.testing.assert_allclose(_output(loaded, args), _output(model, args), atol=tol, rtol=0)


@pytest.mark.parametrize("scheme, most", [("float16", 0.51), ("int8", 0.3)])
def test_files_are_smaller(tmp_path, scheme, most):
    """About 1/2 and 1/4 of the float32 file (a small model's headers weigh more)."""
    model = CharLM(80, 8, 128, num_layers=2, seed=0)
    npgru.io.save(model, tmp_path / "full.npz")
    save_quantized(model, tmp_path / "small.npz", scheme)
    ratio = (tmp_path / "small.npz").stat().st_size / (tmp_path / "full.npz").stat().st_size
    assert ratio < most, ratio


def test_load_as_float64_and_atomic_replace(tmp_path):
    model = CharLM(10, 4, 8, seed=0)
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    save_quantized(model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    loaded = load_quantized(path, dtype=np.float64)
    assert loaded.dtype == np.float64


def test_loading_needs_only_numpy(tmp_path):
    """A fresh interpreter that cannot import torch, numba or onnx loads and runs the file."""
    path = tmp_path / "m.npz"
    save_quantized(SequenceRegressor(2, 8, seed=0), path)
    code = (
        "import sys\n"
        "for m in ('torch', 'numba', 'onnx'): sys.modules[m] = None\n"
        "import numpy as np\n"
        "from npgru.quantize import load_quantized\n"
        f"m = load_quantized({str(path)!r})\n"
        "print(m.predict(np.zeros((1, 3, 2), np.float32)).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"NPGRU_BACKEND": "numpy", "PATH": ""}, check=True)
    assert out.stdout.strip() == "(1, 1)"


def test_errors(tmp_path):
    model = GRU(2, 3, seed=0)
    with pytest.raises(ValueError, match="scheme"):
        save_quantized(model, tmp_path / "x.npz", scheme="int4")
    with pytest.raises(TypeError, match="supports"):
        save_quantized(object(), tmp_path / "x.npz")
    big = GRU(2, 3, seed=0)
    big.params["weight_ih_l0"][0, 0] = 1e6
    with pytest.raises(ValueError, match="float16"):
        save_quantized(big, tmp_path / "x.npz", scheme="float16")
    with pytest.raises(FileNotFoundError):
        load_quantized(tmp_path / "missing.npz")
    # a plain npgru model file, a truncated file, a file with a missing weight
    npgru.io.save(model, tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="(not a valid|cannot read .* as an) npgru quantized"):
        load_quantized(tmp_path / "plain.npz")
    save_quantized(model, tmp_path / "q.npz")
    data = (tmp_path / "q.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="(not a valid|cannot read .* as an) npgru quantized"):
        load_quantized(tmp_path / "cut.npz")
    with np.load(tmp_path / "q.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "scale/weight_hh_l0"}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match="missing parameter 'weight_hh_l0'"):
        load_quantized(tmp_path / "partial.npz")
