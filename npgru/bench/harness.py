"""Fresh processes, alternated: how every contender is timed fairly.

Two libraries timed in one process disturb each other: PyTorch's OpenMP threads and
OpenBLAS's threads keep spinning after each call and steal the cores the other needs, and one
library's frees change the other's page faults. So each contender runs alone in a fresh
process (:mod:`npgru.bench._worker`) with its library's own defaults, blocks alternate
(A B C, B C A, …), and each side keeps, per case, its better block: the drift of a shared
machine hurts both sides alike and the better block is the less disturbed one.

The one environment change: ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` pin OpenBLAS to an
older kernel on some machines (Haswell on an AVX-512 CPU halves numpy's GEMM), so they are
removed for the worker processes unless asked otherwise; the report records what was removed
and which kernel each library then ran.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from importlib.util import find_spec

import numpy as np

OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: environment variables that change how a library threads or allocates: recorded as found
_THREAD_ENV_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "NUMBA_", "MALLOC_",
                        "NPGRU_")

CONTENDERS = ("npgru-numba", "npgru-numpy", "torch")


def available(module: str) -> bool:
    """Whether ``module`` can be imported here (looked up, not imported)."""
    return find_spec(module) is not None


def package_root() -> str:
    """The directory holding the ``npgru`` package (a checkout, or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(keep_openblas_pins: bool, extra: dict | None = None) -> tuple[dict, dict]:
    """The workers' environment and the variables removed from it.

    The workers import the same ``npgru`` as this process (its package directory goes first
    on ``PYTHONPATH``) and choose their backend themselves.
    """
    env = dict(os.environ)
    removed = {}
    if not keep_openblas_pins:
        removed = {k: env.pop(k) for k in OPENBLAS_PINS if k in env}
    env.pop("NPGRU_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join([package_root(), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra or {})
    return env, removed


def thread_env() -> dict:
    """Threading and allocator variables set in this environment (recorded, not changed)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(_THREAD_ENV_PREFIXES)}


def run_python(args: list[str], env: dict, timeout: float = 900) -> str:
    """Run ``python ARGS`` in a fresh process; its stdout (a failure raises with stderr)."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=package_root(), timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark process {args[:2]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def run_worker(spec: dict, env: dict) -> dict:
    """One contender's block in a fresh process (:mod:`npgru.bench._worker`)."""
    out = run_python(["-m", "npgru.bench._worker", json.dumps(spec)], env)
    return json.loads(out.strip().splitlines()[-1])


def alternate(contenders: list[str], spec: dict, blocks: int, env: dict, log) -> dict:
    """Run ``blocks`` blocks of every contender, rotating the order each block.

    Returns ``{contender: [worker result per block]}``.
    """
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    n = len(contenders)
    for b in range(blocks):
        order = contenders[b % n:] + contenders[: b % n]
        for c in order:
            t0 = time.perf_counter()
            results[c].append(run_worker({**spec, "contender": c}, env))
            log(f"block {b + 1}/{blocks} {c}: {time.perf_counter() - t0:.1f} s")
    return results


def summarise(samples: list[float]) -> dict:
    q = np.percentile(samples, [25, 50, 75])
    return {"median": float(q[1]), "p25": float(q[0]), "p75": float(q[2]), "n": len(samples)}


def best_blocks(blocks: list[dict]) -> dict:
    """Per case, the statistics of the block with the lowest median, and every block's median."""
    out = {}
    for key in blocks[0]["cases"]:
        per_block = [summarise(b["cases"][key]["samples"]) for b in blocks]
        i = int(np.argmin([s["median"] for s in per_block]))
        out[key] = {**per_block[i], "inner": blocks[i]["cases"][key]["inner"], "best_block": i,
                    "block_medians": [s["median"] for s in per_block]}
    return out


def best_peaks(blocks: list[dict]) -> dict[str, float]:
    """The best GEMM GFLOP/s per thread count over a contender's blocks."""
    peaks: dict[str, float] = {}
    for b in blocks:
        for n, v in b["gemm_peak_gflops"].items():
            peaks[n] = max(peaks.get(n, 0.0), v)
    return peaks


def median_of(values: list[float]) -> dict:
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "n": len(values)}
