"""Costs a user meets once per process: import time, first-call time, peak memory.

Each is measured in a fresh process, so nothing this process has loaded or compiled counts.
"""

from __future__ import annotations

import tempfile

from .harness import median_of, run_python
from .workloads import CONFIGS

IMPORT_CODE = """
import time; t0, c0 = time.perf_counter(), time.process_time(); import npgru
print(time.perf_counter() - t0, time.process_time() - c0)
"""

FIRST_CALL_CODE = """
import time; t0 = time.perf_counter()
import numpy as np, npgru
npgru.set_backend({backend!r})
B, T, D, H, L = {cfg}
gru = npgru.GRU(D, H, L, batch_first=True, seed=0)
x = np.random.default_rng(1).standard_normal((B, T, D), dtype=np.float32)
t1 = time.perf_counter(); out, _ = gru.forward(x); t2 = time.perf_counter()
gru.backward(np.ones_like(out)); t3 = time.perf_counter()
gru.step(x[:, 0], np.zeros((L, B, H), np.float32)); t4 = time.perf_counter()
print(t2 - t1, t3 - t2, t4 - t3, t2 - t0)
"""

# Peak RSS of a training step above the state after a 2×2 warm-up (imports, compiled
# kernels, lazy initialisation). Every block ≥ 16 KiB is mmapped (MALLOC_* below), so freed
# memory leaves RSS and each library's per-step arrays count while they live.
MEMORY_CODE = """
import gc, numpy as np
B, T, D, H, L = {cfg}
which = {which!r}
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
rng = np.random.default_rng(1)
x = rng.standard_normal((B, T, D), dtype=np.float32)
dout = rng.standard_normal((B, T, H), dtype=np.float32)
if which == "torch":
    import torch
    torch.set_num_threads({threads})
    g = torch.nn.GRU(D, H, L, batch_first=True)
    def step(x, dout):
        out, _ = g(torch.from_numpy(x).requires_grad_(True)); out.backward(torch.from_numpy(dout))
else:
    import npgru
    npgru.set_backend(which.split("-", 1)[1])
    g = npgru.GRU(D, H, L, batch_first=True, seed=0)
    def step(x, dout):
        g.forward(x); g.backward(dout)
step(np.ascontiguousarray(x[:2, :2]), np.ascontiguousarray(dout[:2, :2])); gc.collect()
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
step(x, dout); step(x, dout)
print(status("VmHWM") - base)
"""
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "16384"}


def _last(out: str) -> str:
    return out.strip().splitlines()[-1]


def import_time(env: dict, reps: int) -> dict:
    """``import npgru`` in ``reps`` fresh processes: median and minimum seconds (wall clock),
    and the median CPU time (``cpu_s``: steadier than the wall clock on a busy machine)."""
    runs = [tuple(map(float, _last(run_python(["-c", IMPORT_CODE], env)).split()))
            for _ in range(reps)]
    return {**median_of([w for w, _ in runs]), "cpu_s": median_of([c for _, c in runs])["median"]}


def first_call(env: dict, backends: list[str], config: str) -> dict:
    """Seconds of the first forward, backward and step in a fresh process.

    Numba runs twice on one empty cache: ``numba_cold_cache`` compiles every kernel,
    ``numba_warm_cache`` loads them from the cache the first run wrote (a user's second run).
    """
    def once(backend: str, e: dict) -> dict:
        code = FIRST_CALL_CODE.format(backend=backend, cfg=CONFIGS[config])
        fwd, bwd, stp, total = map(float, _last(run_python(["-c", code], e)).split())
        return {"config": config, "forward_s": fwd, "backward_s": bwd, "step_s": stp,
                "import_to_first_output_s": total}

    out = {}
    for backend in backends:
        if backend != "numba":
            out[backend] = once(backend, env)
            continue
        with tempfile.TemporaryDirectory() as cache:
            e = {**env, "NUMBA_CACHE_DIR": cache}
            out["numba_cold_cache"] = once(backend, e)
            out["numba_warm_cache"] = once(backend, e)
    return out


def peak_memory(env: dict, names: list[str], contenders: list[str], threads: int) -> dict:
    """Bytes a training step adds to RSS at its peak, per config and contender."""
    e = {**env, **MEMORY_ENV}
    return {name: {c: int(_last(run_python(
        ["-c", MEMORY_CODE.format(cfg=CONFIGS[name], which=c, threads=threads)], e)))
        for c in contenders} for name in names}
