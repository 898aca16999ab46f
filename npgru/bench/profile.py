"""Where a GRU's time goes, phase by phase: ``python -m npgru.bench.profile``.

Runs forward+backward of each benchmark config on npgru's active backend with timers around
the recurrence's pieces (:func:`npgru.recurrence.forward_core` / ``backward_core`` and the
cell's time-loop kernels), then times the time loop's hidden GEMMs alone at the same shapes
to split the loop into GEMMs and gate kernels. Phases:

- ``input projection``: the one GEMM ``x·W_ihᵀ`` of all steps and its bias;
- ``time loop: hidden GEMMs`` / ``time loop: gates``: per step ``h·W_hhᵀ`` (backward
  ``dḡh·W_hh``) and the fused element-wise kernel with the loop's own cost; a compiled
  whole-sequence kernel (small shapes on Numba) is one ``time loop (compiled)`` phase;
- ``weight/input gradients``: after the reverse loop, ``dW_ih``, ``dW_hh``, ``dx`` and the
  bias sums (one GEMM or reduction each);
- ``layer``: everything around the cores (batch-first transposes, output copies, checks).

Medians over repeated steps. The wall clock (default) is noisy on a busy machine;
``--clock thread`` counts this thread's CPU time instead and runs BLAS on one thread (so all
the work is this thread's): steady under load, a one-core profile. The GEMM-bound line is the
config's GEMM flops at the GEMM peak measured in the same process with the same clock; beside
it the GEMM phases as timed (the BLAS at these shapes, whatever npgru's own code costs) and the
issue-12 bar of 75 % of the peak: where the first exceeds the second, no change to the gates or
copies alone can reach the bar.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .workloads import CHARLM_OP, CONFIGS, gemm_flops

#: the clock every phase is read with (``time.thread_time`` under ``--clock thread``)
clock = time.perf_counter


def _timed(acc: dict[str, float], name: str, fn: Callable) -> Callable:
    """``fn`` adding its seconds to ``acc[name]``."""
    def wrapper(*args, **kwargs):
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[name] += clock() - t0
    return wrapper


@contextmanager
def _timers(acc: dict[str, float]) -> Iterator[None]:
    """Accumulate seconds per phase into ``acc`` while the block runs."""
    from npgru import _backend, recurrence

    K = _backend.kernels()
    saved_tables = dict(K.TABLES)
    saved_core = recurrence.forward_core, recurrence.backward_core

    def timed(name: str, fn: Callable) -> Callable:
        return _timed(acc, name, fn)

    recurrence.forward_core = timed("forward_core", saved_core[0])
    recurrence.backward_core = timed("backward_core", saved_core[1])
    for name, table in saved_tables.items():
        K.TABLES[name] = table._replace(
            seq_forward=timed("fwd_seq", table.seq_forward),
            seq_backward=timed("bwd_seq", table.seq_backward),
            forward_loop=timed("fwd_loop", table.forward_loop),
            backward_loop=timed("bwd_loop", table.backward_loop))
    try:
        yield
    finally:
        recurrence.forward_core, recurrence.backward_core = saved_core
        K.TABLES.update(saved_tables)


def _hidden_gemms(cfg, reps: int) -> tuple[float, float]:
    """Seconds of one pass's hidden GEMMs alone (forward ``h·W_hhᵀ``, backward ``dg·W_hh``)."""
    B, T, D, H, L = cfg
    rng = np.random.default_rng(0)
    h = rng.standard_normal((B, H), dtype=np.float32)
    dg = rng.standard_normal((B, 3 * H), dtype=np.float32)
    w = rng.standard_normal((3 * H, H), dtype=np.float32)
    u_t = np.ascontiguousarray(w.T)  # the forward loop's pre-transposed copy
    gh, dh = np.empty((B, 3 * H), np.float32), np.empty((B, H), np.float32)

    def best(fn) -> float:
        fn()
        runs = []
        for _ in range(reps):
            t0 = clock()
            for _ in range(T):
                fn()
            runs.append(clock() - t0)
        return statistics.median(runs) * L

    return (best(lambda: np.matmul(h, u_t, out=gh)), best(lambda: np.matmul(dg, w, out=dh)))


def _charlm_step() -> tuple[Callable[[], object], Any]:
    """The paper's CharLM SGD step and its GRU (see :mod:`npgru.bench.workloads`)."""
    from .workloads import charlm_sgd_step

    step, model = charlm_sgd_step()
    return step, model.gru


def profile(name: str, reps: int = 15) -> dict[str, float]:
    """Median seconds per phase of one forward+backward of config ``name`` (for ``CharLM``,
    one SGD step of the paper model, its embedding, head, loss and update as ``model``)."""
    import npgru

    gru: Any
    if name == "CharLM":
        step, gru = _charlm_step()
        cfg = (10, 80, 8, 256, 2)
    else:
        B, T, D, H, L = cfg = CONFIGS[name]
        gru = npgru.GRU(D, H, L, batch_first=True, dtype=np.float32, seed=0)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((B, T, D), dtype=np.float32)
        dout = rng.standard_normal((B, T, H), dtype=np.float32)

        def step():
            gru.forward(x)
            gru.backward(dout)
    step()
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(reps):
        acc: dict[str, float] = defaultdict(float)
        with _timers(acc):
            forward, backward = gru.forward, gru.backward
            gru.forward = _timed(acc, "forward", forward)
            gru.backward = _timed(acc, "backward", backward)
            try:
                t0 = clock()
                step()
                acc["step"] = clock() - t0
            finally:
                del gru.forward, gru.backward
        for k in ("fwd_seq", "bwd_seq", "fwd_loop", "bwd_loop", "forward_core", "backward_core"):
            acc.setdefault(k, 0.0)
        for k, v in acc.items():
            samples[k].append(v)
    m = {k: statistics.median(v) for k, v in samples.items()}
    g_fwd, g_bwd = _hidden_gemms(cfg, reps)
    out: dict[str, float] = {}
    if m["fwd_seq"]:
        out["forward: time loop (compiled)"] = m["fwd_seq"]
        fwd_loop = m["fwd_seq"]
    else:
        fwd_loop = m["fwd_loop"]
        out["forward: time loop, hidden GEMMs"] = min(g_fwd, fwd_loop)
        out["forward: time loop, gates"] = fwd_loop - out["forward: time loop, hidden GEMMs"]
    out["forward: input projection"] = m["forward_core"] - fwd_loop
    out["forward: layer (transposes, copies, checks)"] = m["forward"] - m["forward_core"]
    if m["bwd_seq"]:
        out["backward: time loop (compiled)"] = m["bwd_seq"]
        bwd_loop = m["bwd_seq"]
    else:
        bwd_loop = m["bwd_loop"]
        out["backward: time loop, hidden GEMMs"] = min(g_bwd, bwd_loop)
        out["backward: time loop, gates"] = bwd_loop - out["backward: time loop, hidden GEMMs"]
    out["backward: weight/input gradients"] = m["backward_core"] - bwd_loop
    out["backward: layer (transposes, copies, checks)"] = m["backward"] - m["backward_core"]
    if name == "CharLM":
        out["model: embedding, head, loss, update"] = m["step"] - m["forward"] - m["backward"]
    out["total forward+backward"] = m["step"]
    return out


#: the phases that are BLAS GEMMs (with their bias adds and sums)
GEMM_PHASES = ("forward: input projection", "forward: time loop, hidden GEMMs",
               "backward: time loop, hidden GEMMs", "backward: weight/input gradients")


def gemm_phases(prof: dict[str, float]) -> float | None:
    """Seconds of a profile's GEMM phases; None where a compiled time loop holds its GEMMs."""
    if any(k.endswith("(compiled)") for k in prof):
        return None
    return sum(prof[k] for k in GEMM_PHASES)


def profile_step(name: str, reps: int = 15) -> dict[str, float]:
    """Median seconds of one streaming step (``GRU.step`` of every layer) of config ``name``,
    and of its GEMMs alone (``x·W_ihᵀ`` and ``h·W_hhᵀ`` per layer, BLAS at the same shapes);
    the rest is the gate math, the finiteness check and the copies."""
    from npgru import _backend, recurrence

    from ._worker import time_case
    from .workloads import build_npgru

    B, T, D, H, L = CONFIGS[name]
    step = build_npgru("step", CONFIGS[name])
    rng = np.random.default_rng(0)
    ops = []
    for k in range(L):
        x = rng.standard_normal((B, D if k == 0 else H), dtype=np.float32)
        w_ih = rng.standard_normal((3 * H, x.shape[1]), dtype=np.float32)
        h = rng.standard_normal((B, H), dtype=np.float32)
        w_hh = rng.standard_normal((3 * H, H), dtype=np.float32)
        gi, gh = np.empty((B, 3 * H), np.float32), np.empty((B, 3 * H), np.float32)
        ops += [(x, w_ih, gi), (h, w_hh, gh)]

    K = _backend.kernels()
    # the BLAS cell multiplies h·Wᵀ from this batch size on, below it W·hᵀ (transposed space)
    min_batch = getattr(K, "BLAS_GATES_MIN_BATCH", math.inf)

    def gemms():
        for a, w, out in ops:
            if B >= min_batch:
                np.matmul(a, w.T, out=out)
            else:
                np.matmul(w, a.T, out=out.reshape(out.shape[1], B))

    spec = {"warmup": 3, "min_sample_s": 1e-3, "runs": reps, "max_runs": reps, "case_budget_s": 0}

    def median(fn) -> float:
        return statistics.median(time_case(fn, spec, clock)["samples"])

    total = median(step)
    # the compiled cell multiplies with loops: no separate GEMMs to time
    if recurrence.use_stream_cell(K, B, 3, H, max(D, H)):
        return {"step: compiled cell (GEMMs as loops, gates)": total, "total step": total}
    g = min(median(gemms), total)
    return {"step: GEMMs (x·W_ihᵀ, h·W_hhᵀ)": g,
            "step: gates, finiteness check, copies": total - g, "total step": total}


def _print_table(profiles: dict[str, dict[str, float]], total_row: str, label) -> None:
    names = list(profiles)
    rows = sorted({r for prof in profiles.values() for r in prof},
                  key=lambda r: (r.startswith("total"), r.startswith("backward"), r))
    print("| phase | " + " | ".join(label(n) for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for r in rows:
        cells = []
        for n in names:
            v, total = profiles[n].get(r), profiles[n][total_row]
            cells.append("–" if v is None else f"{v * 1e3:.3g} ({100 * v / total:.0f} %)")
        print(f"| {r} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m npgru.bench.profile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (wall clock only)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="wall clock, or this thread's CPU time with one BLAS thread")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configs")
    p.add_argument("--backend", default=None, help="numba or numpy (default: the active one)")
    p.add_argument("--reps", type=int, default=15, help="repeats (medians are reported)")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    import npgru

    from . import _worker

    global clock
    if args.clock == "thread":
        clock = time.thread_time
        args.threads = 1
    if args.backend:
        npgru.set_backend(args.backend)
    threadpool_limits(args.threads)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    peak = _worker.gemm_peak("npgru-" + npgru.get_backend(), 10, clock)
    profiles = {n: profile(n, args.reps) for n in names}
    threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
    print(f"backend {npgru.get_backend()}, {threads}, {args.clock} clock, float32, batch_first; "
          f"numpy GEMM peak {peak:.0f} GFLOP/s; ms (share of the total)\n")
    _print_table(profiles, "total forward+backward",
                 lambda n: f"{n} {CONFIGS.get(n, '(1 thread)')}")
    rows: dict[str, list[str]] = defaultdict(list)
    for n in names:
        flops = (gemm_flops(CHARLM_OP, None) if n == "CharLM"
                 else gemm_flops("forward_backward", CONFIGS[n]))
        total, bound = profiles[n]["total forward+backward"], flops / (peak * 1e9)
        timed = gemm_phases(profiles[n])
        for row, v in (("GEMM-bound limit (GEMM flops at peak)", bound),
                       ("GEMM phases as timed (input projection, hidden GEMMs, gradients)", timed),
                       ("75 % of the peak (the bound / 0.75)", bound / 0.75)):
            rows[row].append("–" if v is None else f"{v * 1e3:.3g} ({100 * v / total:.0f} %)")
    for row, cells in rows.items():
        print(f"| {row} | " + " | ".join(cells) + " |")
    steps = {n: profile_step(n, args.reps) for n in names if n in CONFIGS}
    if steps:
        print("\nOne streaming step of every layer (`GRU.step`); ms (share of the step)\n")
        _print_table(steps, "total step", lambda n: f"{n} {CONFIGS[n]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
