"""One contender in a fresh process: ``python -m npgru.bench._worker SPEC_JSON``.

Imports only its own library (npgru on one backend, or torch), sets the thread counts each
case asks for, warms every case up, times it and prints one JSON object on the last line of
stdout: per case the per-call samples, plus what the process ran on (BLAS, threads, its own
GEMM peak). The parent (:mod:`npgru.bench.harness`) alternates these processes.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable

import numpy as np

from .workloads import CONFIGS, build_npgru, build_torch


def _threads_setter(contender: str) -> Callable[[int], None]:
    """A function that sets this process's thread count for every pool the contender uses."""
    from threadpoolctl import threadpool_limits

    if contender == "torch":
        import torch

        def set_torch_threads(n: int) -> None:
            torch.set_num_threads(n)
            threadpool_limits(n)  # numpy's BLAS, loaded alongside torch, never runs anyway

        return set_torch_threads

    def set_npgru_threads(n: int) -> None:
        threadpool_limits(n)  # numpy's BLAS (the GEMMs npgru calls)
        try:
            import numba
        except ImportError:
            return
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]

    return set_npgru_threads


def gemm_peak(contender: str, reps: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """float32 GEMM GFLOP/s of the contender's library: the best of ``reps`` 1024³ products."""
    n = 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    if contender == "torch":
        import torch

        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n, n)

        def mm() -> None:
            torch.mm(ta, tb, out=tc)
    else:
        c = np.empty((n, n), dtype=np.float32)

        def mm() -> None:
            np.matmul(a, b, out=c)
    mm()
    best = math.inf
    for _ in range(reps):
        t0 = clock()
        mm()
        best = min(best, clock() - t0)
    return 2 * n**3 / best / 1e9


def time_case(fn, spec: dict, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Per-call seconds of one case: ``spec["runs"]`` to ``spec["max_runs"]`` samples.

    A sample repeats ``fn`` until it lasts ``min_sample_s`` (µs-scale calls); a slow case gets
    the minimum number of samples, a fast one more, up to ``case_budget_s`` of timing.
    """
    t0 = clock()
    for _ in range(spec["warmup"]):
        fn()
    per_call = (clock() - t0) / max(spec["warmup"], 1)
    inner = max(1, math.ceil(spec["min_sample_s"] / max(per_call, 1e-9)))
    runs = math.ceil(spec["case_budget_s"] / max(per_call * inner, 1e-9))
    runs = min(spec["max_runs"], max(spec["runs"], runs))
    samples = []
    for _ in range(runs):
        t0 = clock()
        for _ in range(inner):
            fn()
        samples.append((clock() - t0) / inner)
    return {"samples": samples, "inner": inner}


def process_info(contender: str) -> dict:
    """What this process runs on: versions, BLAS libraries, thread counts."""
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads",
            "threading_layer")
    info: dict = {"numpy": np.__version__,
                  "threadpools": [{k: d.get(k) for k in keep} for d in threadpool_info()]}
    if contender == "torch":
        import torch

        cfg = torch.__config__.show()
        info.update(torch=torch.__version__, torch_config=cfg,
                    torch_blas=_config_field(cfg, "BLAS_INFO"),
                    torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    torch_threads=torch.get_num_threads(),
                    torch_interop_threads=torch.get_num_interop_threads())
    else:
        import npgru

        info.update(npgru=npgru.__version__, backend=npgru._backend.get_backend())
        if info["backend"] == "numba":
            import numba

            info.update(numba=numba.__version__, numba_threads=numba.get_num_threads())
    return info


def _config_field(text: str, key: str) -> str | None:
    """``VALUE`` of ``KEY=VALUE`` in ``torch.__config__.show()``'s build settings."""
    found = re.search(rf"\b{key}=([^,\s]+)", text)
    return found.group(1) if found else None


def main(spec: dict) -> dict:
    contender = spec["contender"]
    t_start = time.perf_counter()
    if contender.startswith("npgru-"):
        import npgru

        npgru.set_backend(contender.split("-", 1)[1])
        build = build_npgru
    else:
        build = build_torch
    set_threads = _threads_setter(contender)
    set_threads(spec["threads"])
    # GEMM peak per thread count (JSON keys are strings), before and after the cases: the
    # better of the two is this process's peak
    peaks: dict[str, float] = {}

    def peak(n: int) -> None:
        peaks[str(n)] = max(peaks.get(str(n), 0.0), gemm_peak(contender, spec["peak_reps"]))

    out: dict = {"contender": contender, "info": process_info(contender), "cases": {},
                 "gemm_peak_gflops": peaks}
    peak(spec["threads"])
    for case in spec["cases"]:
        t0 = time.perf_counter()
        set_threads(case["threads"])
        fn = build(case["op"], CONFIGS.get(case["config"]))
        out["cases"][case["key"]] = time_case(fn, spec)
        out["cases"][case["key"]]["wall_s"] = time.perf_counter() - t0
        if str(case["threads"]) not in peaks:
            peak(case["threads"])
        set_threads(spec["threads"])
    peak(spec["threads"])
    out["wall_s"] = time.perf_counter() - t_start
    return out


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    sys.stdout.write("\n" + json.dumps(result) + "\n")
