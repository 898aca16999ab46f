"""`import npgru` needs only NumPy: it works with torch and numba blocked, and imports neither."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = """
import sys
sys.modules["torch"] = None
sys.modules["numba"] = None
import numpy as np
import npgru
assert npgru.get_backend() == "numpy", npgru.get_backend()
gru = npgru.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
out, h_n = gru.forward(np.ones((5, 2, 3), dtype=np.float32), lengths=[5, 3])
dx, dh0 = gru.backward(np.ones_like(out))
assert dx.shape == (5, 2, 3) and np.isfinite(gru.flat_grads).all()
print("ok")
"""

LAZY = """
import sys
import npgru
heavy = sorted(m for m in ("torch", "numba", "matplotlib", "tqdm") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_and_train_step_without_torch_or_numba():
    assert _run(BLOCKED) == "ok"


def test_import_pulls_in_nothing_heavy():
    assert _run(LAZY) == "none"
