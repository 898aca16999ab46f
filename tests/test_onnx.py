"""ONNX export: onnxruntime runs the exported file and agrees with npgru's forward."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from npgru import export_onnx
from npgru.gru import GRU
from npgru.lstm import LSTM
from npgru.models import CharLM, SequenceClassifier, SequenceRegressor
from npgru.onnx_export import onnx_rnn_weights

from .conftest import require

TOL = 1e-5  # float32 end to end
LENGTHS = np.array([6, 3, 1, 5])  # right-padded batch: full, middle, one step, almost full


def run_onnx(path, **feeds):
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def onnx_gru_reference(x, W, R, B, linear_before_reset):
    """The ONNX ``GRU`` operator's equations for one forward direction, written from its spec.

    ``z = σ(Xt Wzᵀ + Ht-1 Rzᵀ + Wbz + Rbz)``, ``r`` alike; ``h̃ = tanh(Xt Whᵀ + (r ⊙ Ht-1) Rhᵀ +
    Rbh + Wbh)``, or with ``linear_before_reset`` ``h̃ = tanh(Xt Whᵀ + r ⊙ (Ht-1 Rhᵀ + Rbh) +
    Wbh)``; ``Ht = (1 − z) ⊙ h̃ + z ⊙ Ht-1``. Blocks in the order z, r, h.
    """
    H = R.shape[-1]
    Wz, Wr, Wh = np.split(W[0], 3)
    Rz, Rr, Rh = np.split(R[0], 3)
    Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = np.split(B[0], 6)
    h = np.zeros((x.shape[1], H))
    for xt in x:
        z = _sigmoid(xt @ Wz.T + h @ Rz.T + Wbz + Rbz)
        r = _sigmoid(xt @ Wr.T + h @ Rr.T + Wbr + Rbr)
        if linear_before_reset:
            h_tilde = np.tanh(xt @ Wh.T + r * (h @ Rh.T + Rbh) + Wbh)
        else:
            h_tilde = np.tanh(xt @ Wh.T + (r * h) @ Rh.T + Rbh + Wbh)
        h = (1 - z) * h_tilde + z * h
    return h


@pytest.mark.parametrize("variant", ["torch", "classic"])
def test_onnx_equations_match_npgru(variant, rng):
    """The exported weights under the ONNX spec's equations give npgru's states, no runtime.

    For ``classic`` this is the proof that negating the z-blocks turns ONNX's update
    ``(1 − z) ⊙ h̃ + z ⊙ H`` into classic's ``(1 − z) ⊙ h + z ⊙ h̃``: ONNX's gate is then
    ``σ(−a) = 1 − σ(a)``, so the two updates coincide.
    """
    a = rng.standard_normal(1000)
    np.testing.assert_allclose(1.0 - _sigmoid(a), _sigmoid(-a), atol=1e-15)
    gru = GRU(3, 5, variant=variant, dtype=np.float64, seed=0)
    x = rng.standard_normal((7, 2, 3))
    W, R, B = onnx_rnn_weights(gru, 0)
    expected = gru.forward(x)[1][0]
    got = onnx_gru_reference(x, W, R, B, linear_before_reset=variant == "torch")
    # onnx_rnn_weights rounds to float32, hence the float32-sized tolerance
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("variant", ["torch", "classic"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_gru_matches_onnxruntime(tmp_path, rng, variant, bidirectional, num_layers, with_lengths):
    require("onnx")
    gru = GRU(5, 7, num_layers=num_layers, bidirectional=bidirectional, variant=variant, seed=1)
    T, B = 6, len(LENGTHS)
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    h0 = rng.standard_normal((num_layers * gru.num_directions, B, 7)).astype(np.float32)
    path = tmp_path / "gru.onnx"
    export_onnx(gru, path, lengths=with_lengths, initial_state=True)
    feeds = {"input": x, "h0": h0} | ({"lengths": LENGTHS} if with_lengths else {})
    out, h_n = run_onnx(path, **feeds)
    expected_out, expected_h_n = gru.forward(x, h0, LENGTHS if with_lengths else None)
    np.testing.assert_allclose(out, expected_out, atol=TOL, rtol=0)
    np.testing.assert_allclose(h_n, expected_h_n, atol=TOL, rtol=0)


def test_gru_batch_first_no_bias_float64(tmp_path, rng):
    """batch_first moves input and output only; no bias; a float64 model exports as float32."""
    require("onnx")
    gru = GRU(4, 6, num_layers=2, bias=False, batch_first=True, bidirectional=True,
              dtype=np.float64, seed=2)
    x = rng.standard_normal((3, 5, 4))
    path = tmp_path / "gru.onnx"
    export_onnx(gru, path)
    out, h_n = run_onnx(path, input=x.astype(np.float32))
    expected_out, expected_h_n = gru.forward(x)
    assert out.shape == (3, 5, 12) and h_n.shape == (4, 3, 6)
    np.testing.assert_allclose(out, expected_out, atol=TOL, rtol=0)
    np.testing.assert_allclose(h_n, expected_h_n, atol=TOL, rtol=0)


@pytest.mark.parametrize("variant", ["torch", "classic"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_sequence_models_match_onnxruntime(tmp_path, rng, variant, with_lengths):
    require("onnx")
    X = rng.standard_normal((len(LENGTHS), 6, 5)).astype(np.float32)
    lengths = LENGTHS if with_lengths else None
    for model in (
        SequenceRegressor(5, 8, output_size=2, num_layers=2, bidirectional=True,
                          variant=variant, seed=3),
        SequenceClassifier(5, 8, num_classes=4, variant=variant, dropout=0.5, seed=4),
    ):
        path = tmp_path / "model.onnx"
        export_onnx(model, path, lengths=with_lengths)
        out, h_n = run_onnx(path, input=X, **({"lengths": LENGTHS} if with_lengths else {}))
        model.eval()  # the file is the model in evaluation mode (no dropout)
        np.testing.assert_allclose(out, model.forward(X, lengths), atol=TOL, rtol=0)
        np.testing.assert_allclose(h_n, model.last_state, atol=TOL, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_charlm_matches_onnxruntime(tmp_path, rng, bidirectional):
    require("onnx")
    model = CharLM(11, 4, 8, num_layers=2, bidirectional=bidirectional, seed=5).eval()
    ids = rng.integers(0, 11, size=(len(LENGTHS), 6))
    h0 = rng.standard_normal((2 * model.gru.num_directions, len(LENGTHS), 8)).astype(np.float32)
    path = tmp_path / "lm.onnx"
    export_onnx(model, path, lengths=True, initial_state=True)
    logits, h_n = run_onnx(path, input=ids, lengths=LENGTHS, h0=h0)
    np.testing.assert_allclose(logits, model.forward(ids, LENGTHS, h0), atol=TOL, rtol=0)
    np.testing.assert_allclose(h_n, model.last_state, atol=TOL, rtol=0)


def test_charlm_step_by_step_with_state(tmp_path, rng):
    """Feeding h_n back as h0 one token at a time (generation on a device) equals a full pass."""
    require("onnx")
    model = CharLM(9, 3, 6, seed=6).eval()
    ids = rng.integers(0, 9, size=(1, 5))
    path = tmp_path / "lm.onnx"
    export_onnx(model, path, initial_state=True)
    h = np.zeros((1, 1, 6), dtype=np.float32)
    steps = []
    for t in range(ids.shape[1]):
        logits, h = run_onnx(path, input=ids[:, t : t + 1], h0=h)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), model.forward(ids), atol=TOL, rtol=0)


def test_file_is_valid_onnx_and_replaced_atomically(tmp_path):
    onnx = require("onnx")
    path = tmp_path / "gru.onnx"
    path.write_bytes(b"old")
    export_onnx(GRU(2, 3, seed=0), path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [n.op_type for n in proto.graph.node].count("GRU") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["gru.onnx"]  # no temporary file left


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="export_onnx supports GRU"):
        export_onnx(object(), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(GRU(2, 3), tmp_path / "x.onnx", opset=11)
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ImportError, match=r"pip install npgru\[onnx\]"):
        export_onnx(GRU(2, 3), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def onnx_lstm_reference(x, W, R, B):
    """The ONNX ``LSTM`` operator's equations (no peepholes) for one forward direction, from its
    spec: blocks in the order i, o, f, c; ``Ct = ft ⊙ Ct-1 + it ⊙ ct``, ``Ht = ot ⊙ tanh(Ct)``."""
    H = R.shape[-1]
    Wi, Wo, Wf, Wc = np.split(W[0], 4)
    Ri, Ro, Rf, Rc = np.split(R[0], 4)
    Wbi, Wbo, Wbf, Wbc, Rbi, Rbo, Rbf, Rbc = np.split(B[0], 8)
    h = c = np.zeros((x.shape[1], H))
    for xt in x:
        i = _sigmoid(xt @ Wi.T + h @ Ri.T + Wbi + Rbi)
        f = _sigmoid(xt @ Wf.T + h @ Rf.T + Wbf + Rbf)
        ct = np.tanh(xt @ Wc.T + h @ Rc.T + Wbc + Rbc)
        o = _sigmoid(xt @ Wo.T + h @ Ro.T + Wbo + Rbo)
        c = f * c + i * ct
        h = o * np.tanh(c)
    return h, c


def test_onnx_lstm_equations_match_npgru(rng):
    """npgru's i, f, g, o blocks, reordered for ONNX, give npgru's states under the spec."""
    lstm = LSTM(3, 5, dtype=np.float64, seed=0)
    x = rng.standard_normal((4, 2, 3))
    h, c = onnx_lstm_reference(x, *onnx_rnn_weights(lstm, 0))
    _, (h_n, c_n) = lstm.forward(x)
    np.testing.assert_allclose(h, h_n[0], atol=1e-6, rtol=0)  # float32 weights
    np.testing.assert_allclose(c, c_n[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_matches_onnxruntime(tmp_path, rng, bidirectional, with_lengths, batch_first):
    onnx = require("onnx")
    lstm = LSTM(5, 7, num_layers=2, bidirectional=bidirectional, batch_first=batch_first, seed=1)
    T, Bn = 6, len(LENGTHS)
    x = rng.standard_normal((Bn, T, 5) if batch_first else (T, Bn, 5)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 2 * lstm.num_directions, Bn, 7)).astype(np.float32)
    path = tmp_path / "lstm.onnx"
    export_onnx(lstm, path, lengths=with_lengths, initial_state=True)
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("LSTM") == 2
    feeds = {"input": x, "h0": h0, "c0": c0, **({"lengths": LENGTHS} if with_lengths else {})}
    out, h_n, c_n = run_onnx(path, **feeds)
    expected_out, (expected_h, expected_c) = lstm.forward(x, (h0, c0),
                                                          LENGTHS if with_lengths else None)
    for mine, theirs in ((out, expected_out), (h_n, expected_h), (c_n, expected_c)):
        np.testing.assert_allclose(mine, theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("with_lengths", [False, True])
def test_lstm_models_match_onnxruntime(tmp_path, rng, with_lengths):
    require("onnx")
    X = rng.standard_normal((len(LENGTHS), 6, 5)).astype(np.float32)
    lengths = LENGTHS if with_lengths else None
    for model in (
        SequenceRegressor(5, 8, output_size=2, num_layers=2, bidirectional=True, cell="lstm",
                          seed=3),
        SequenceClassifier(5, 8, num_classes=4, cell="lstm", seed=4),
    ):
        path = tmp_path / "model.onnx"
        export_onnx(model, path, lengths=with_lengths)
        out, h_n, c_n = run_onnx(path, input=X, **({"lengths": LENGTHS} if with_lengths else {}))
        np.testing.assert_allclose(out, model.forward(X, lengths), atol=TOL, rtol=0)
        np.testing.assert_allclose(h_n, model.last_state[0], atol=TOL, rtol=0)
        np.testing.assert_allclose(c_n, model.last_state[1], atol=TOL, rtol=0)
    lm = CharLM(11, 4, 8, num_layers=2, cell="lstm", seed=5)
    ids = rng.integers(0, 11, size=(len(LENGTHS), 6))
    h0, c0 = rng.standard_normal((2, 2, len(LENGTHS), 8)).astype(np.float32)
    export_onnx(lm, tmp_path / "lm.onnx", lengths=True, initial_state=True)
    logits, h_n, c_n = run_onnx(tmp_path / "lm.onnx", input=ids, lengths=LENGTHS, h0=h0, c0=c0)
    np.testing.assert_allclose(logits, lm.forward(ids, LENGTHS, (h0, c0)), atol=TOL, rtol=0)
    np.testing.assert_allclose(c_n, lm.last_state[1], atol=TOL, rtol=0)
