"""File size and accuracy of float16 / int8 weight files against the float32 model.

    python benchmarks/bench_quantize.py [--quick]

Trains two models on shipped data, saves each as float32 (``npgru.io.save``), float16 and int8
(``npgru.quantize.save_quantized``), loads the small files back with NumPy alone and evaluates
every version on the same held-out data:

- a character language model (``CharLM``, embedding 8 → GRU 2×128 → 80 symbols) on the shipped
  Shakespeare corpus (the 12 roles with the most text, pooled; each role's last 20% is the test
  set), next-character accuracy and loss;
- a one-step forecaster (``SequenceRegressor``, GRU 64) on the synthetic IoT sensors, test MSE.

Writes ``benchmarks/results/quantize.md``. The numbers are deterministic for a given machine
(seeded training); ``--quick`` trains less, for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import npgru.io
from npgru.datasets import sensors, shakespeare
from npgru.models import CharLM, SequenceRegressor
from npgru.quantize import load_quantized, save_quantized
from npgru.train import fit

RESULTS = os.path.join(os.path.dirname(__file__), "results", "quantize.md")


def charlm_case(quick: bool):
    data = shakespeare.load(max_clients=4 if quick else 12)
    x_train, y_train = data.pooled("train")
    x_test, y_test = data.pooled("test")
    model = CharLM(data.meta["vocab_size"], 8, 128, num_layers=2, seed=0)
    fit(model, x_train, y_train, epochs=1 if quick else 3, batch_size=32, clip_norm=5.0,
        progress=False, seed=0)
    desc = (f"CharLM(vocab 80, embed 8, GRU 2×128), Shakespeare: {len(data)} roles, "
            f"{len(x_train)} train / {len(x_test)} test windows of 80 characters")
    return desc, model, (x_test, y_test), ("accuracy", "loss")


def sensors_case(quick: bool):
    data = sensors.load(num_devices=10 if quick else 20, stride=4)
    x_train, y_train = data.pooled("train")
    x_test, y_test = data.pooled("test")
    model = SequenceRegressor(x_train.shape[2], 64, seed=0)
    fit(model, x_train, y_train, epochs=1 if quick else 5, batch_size=64, progress=False, seed=0)
    desc = (f"SequenceRegressor(GRU 64), sensors forecast: {len(data)} devices, "
            f"{len(x_train)} train / {len(x_test)} test windows")
    return desc, model, (x_test, y_test), ("loss",)


def measure(model, test, metrics, directory: str) -> list[tuple[str, int, dict]]:
    """``(scheme, file bytes, metrics)`` for float32, float16 and int8."""
    rows = []
    for scheme in ("float32", "float16", "int8"):
        path = os.path.join(directory, f"{scheme}.npz")
        if scheme == "float32":
            npgru.io.save(model, path)
            loaded = npgru.io.load(path)
        else:
            save_quantized(model, path, scheme)
            loaded = load_quantized(path)
        result = loaded.evaluate(*test)
        rows.append((scheme, os.path.getsize(path), {m: result[m] for m in metrics}))
    return rows


def table(rows, metrics) -> list[str]:
    base_size, base = rows[0][1], rows[0][2]
    head = "| weights | file bytes | size vs float32 | " + " | ".join(
        f"test {m} | change" for m in metrics) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(metrics))]
    for scheme, size, values in rows:
        cells = [scheme, f"{size:,}", f"{size / base_size:.1%}"]
        for m in metrics:
            cells += [f"{values[m]:.6f}", f"{values[m] - base[m]:+.2e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train less (smoke run)")
    args = parser.parse_args()
    lines = ["# Quantized weight files: size and accuracy", "",
             f"`python benchmarks/bench_quantize.py{' --quick' if args.quick else ''}` · "
             f"numpy {np.__version__} · Python {sys.version.split()[0]}", "",
             "float32: `npgru.io.save`; float16 / int8: `npgru.quantize.save_quantized` "
             "(int8: per-output-channel symmetric scales for the weight matrices, biases float32). "
             "Every file is loaded back and evaluated on the same test set; change = quantized − "
             "float32.", ""]
    with tempfile.TemporaryDirectory() as directory:
        for case in (charlm_case, sensors_case):
            t0 = time.perf_counter()
            desc, model, test, metrics = case(args.quick)
            rows = measure(model, test, metrics, directory)
            section = [f"## {desc}", "", f"{model.num_params:,} parameters; data and training "
                       f"took {time.perf_counter() - t0:.0f} s.", "", *table(rows, metrics), ""]
            print("\n".join(section), flush=True)
            lines += section
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
