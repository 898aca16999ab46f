"""Worst difference between onnxruntime running an exported file and npgru's forward.

    python benchmarks/onnx_parity.py

Grid: GRU layers over both variants × {1, 2} layers × uni/bidirectional × with/without
``lengths`` (T=50, B=8, D=10, H=64), and the three ready models with lengths, float32. Also the
median time of one forward at batch 1 (T=50) in each, for a device-sized view.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort

import npgru

T, B, D, H = 50, 8, 10, 64


def session(model, directory, **kw):
    path = os.path.join(directory, "model.onnx")
    npgru.export_onnx(model, path, **kw)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def median_ms(fn, repeat=30) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    worst = 0.0
    with tempfile.TemporaryDirectory() as directory:
        for variant, layers, bidir, use_len in itertools.product(
                ("torch", "classic"), (1, 2), (False, True), (False, True)):
            gru = npgru.GRU(D, H, layers, bidirectional=bidir, variant=variant, seed=1)
            feeds = {"input": x} | ({"lengths": lengths} if use_len else {})
            out, h_n = session(gru, directory, lengths=use_len).run(None, feeds)
            ref_out, ref_h_n = gru.forward(x, lengths=lengths if use_len else None)
            err = max(np.abs(out - ref_out).max(), np.abs(h_n - ref_h_n).max())
            worst = max(worst, err)
            print(f"GRU {variant:7s} layers={layers} bidirectional={bidir!s:5s} "
                  f"lengths={use_len!s:5s} max |diff| {err:.2e}")
        X = x.transpose(1, 0, 2).copy()
        ids = rng.integers(0, 80, size=(B, T))
        for model, inp in ((npgru.SequenceRegressor(D, H, num_layers=2, seed=2), X),
                           (npgru.SequenceClassifier(D, H, 5, bidirectional=True, seed=3), X),
                           (npgru.CharLM(80, 8, H, num_layers=2, seed=4), ids)):
            model.eval()
            out = session(model, directory, lengths=True).run(None, {"input": inp,
                                                                      "lengths": lengths})[0]
            err = np.abs(out - model.forward(inp, lengths)).max()
            worst = max(worst, err)
            print(f"{type(model).__name__:18s} max |diff| {err:.2e}")
        gru = npgru.GRU(D, H, 2, seed=1)
        one = x[:, :1]
        sess = session(gru, directory)
        onnx_ms = median_ms(lambda: sess.run(None, {"input": one}))
        npgru_ms = median_ms(lambda: gru.forward(one))
    print(f"worst max |diff| over the grid: {worst:.2e} (float32)")
    print(f"batch 1, T={T}, 2 layers, H={H}: onnxruntime {onnx_ms:.2f} ms, "
          f"npgru ({npgru.get_backend()}) {npgru_ms:.2f} ms (medians of 30)")


if __name__ == "__main__":
    main()
