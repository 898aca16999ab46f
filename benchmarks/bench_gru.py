"""npgru (Numba and NumPy backends) against torch.nn.GRU on CPU: the published benchmark.

    .venv/bin/python benchmarks/bench_gru.py                     # full run (≈3.5 min on 2 quiet cores)
    .venv/bin/python benchmarks/bench_gru.py --quick             # ≈1 min
    .venv/bin/python benchmarks/bench_gru.py --readme README.md  # also refresh README's table

The code lives in the package (:mod:`npgru.bench`), so ``npgru bench`` runs the same thing
from any install; this script only defaults ``--out`` to ``benchmarks/results``. Each library
is timed alone in its own fresh process with its own defaults, in alternated blocks; see
``benchmarks/README.md`` for the method, the profiles and the GEMM-bound limits.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from npgru.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/bench_gru.py", out_default=os.path.join(HERE, "results")))
