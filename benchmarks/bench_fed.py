"""The federated simulator's own cost, and what the process executor buys with real GRU clients.

    .venv/bin/python benchmarks/bench_fed.py            # full run (≈1 min on 2 cores)
    .venv/bin/python benchmarks/bench_fed.py --quick    # fewer repeats

1. **Overhead** (issue 5's set-up, comparable with Flower's measured ≈27 ms per client-round,
   ≈10 s start-up, 1.2–1.5 GB): a 200k-parameter ``SequenceRegressor``, 1,000 clients, 100 per
   round × 10 rounds, and a trivial client fit that returns a fixed delta without training —
   so every millisecond is the simulator's (sampling, broadcast, result transfer, validation,
   aggregation, history). Per executor, in a fresh process: ``import npgru`` time, start-up
   (``run()`` called → first round starts), shut-down, overhead per client-round (median of
   repeats), and peak RSS of the main process and of each worker.
2. **Real GRU clients**: a ``SequenceClassifier`` trained locally by each client; serial vs
   process executor (2 workers) timed interleaved, median of repeats, with a check that both
   give the same model bit for bit.

Every measurement runs in a child process started without ``OPENBLAS_CORETYPE`` /
``OPENBLAS_L2_SIZE`` (they pin OpenBLAS to slower kernels on some machines); the BLAS in use
is recorded. Writes ``benchmarks/results/fed.json`` and ``fed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
TARGETS = {"overhead_ms": 1.0, "startup_s": 0.5, "peak_rss_mb": 300.0, "speedup": 1.7}


# -- child side: one measurement per fresh process ------------------------------------------
def _fixed_delta_update(model, data, ins, training):
    """A client that does no work: the same delta every time (allocated once per process)."""
    import numpy as np

    from npgru import fed

    delta = _fixed_delta_update.__dict__.get("delta")
    if delta is None or delta.size != model.flat_params.size:
        delta = _fixed_delta_update.delta = np.full(model.flat_params.size, 1e-6)
    return fed.FitRes(ins.client_id, delta, data.num_train, {"loss": 0.0})


def child_overhead(executor: str, repeats: int) -> dict:
    t0 = time.perf_counter()
    import resource

    import numpy as np

    import npgru
    from npgru import fed
    from npgru.datasets import ClientData

    import_s = time.perf_counter() - t0
    model = npgru.SequenceRegressor(4, 256, seed=0)  # 201,473 parameters
    x, y = np.zeros((2, 3, 4), np.float32), np.zeros((2, 1), np.float32)
    clients = [ClientData(f"client_{i:04d}", x, y, x[:0], y[:0]) for i in range(1000)]
    runs = []
    for _ in range(repeats):
        marks: list[float] = []
        sim = fed.Simulation(model, clients, rounds=10, clients_per_round=100,
                             local_update=_fixed_delta_update, eval_every=0, executor=executor,
                             workers=2, seed=0)
        start = time.perf_counter()
        history = sim.run(callback=lambda r, marks=marks: marks.append(time.perf_counter()))
        end = time.perf_counter()
        in_rounds = sum(r["wall_time"] for r in history)
        runs.append({
            "startup_s": marks[0] - history[0]["wall_time"] - start,
            "shutdown_s": end - marks[-1],
            "overhead_ms": 1e3 * in_rounds / sum(r["num_sampled"] for r in history),
            "bytes_up_per_round": history[-1]["bytes_up"],
        })
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    out.update({
        "runs": runs, "import_s": import_s, "num_params": model.num_params,
        "peak_rss_mb": usage, "worker_peak_rss_mb": workers if executor == "process" else None,
    })
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def child_speedup(repeats: int) -> dict:
    import numpy as np

    import npgru
    from npgru import fed

    rng = np.random.default_rng(0)
    n, T, D, H, C = 16 * 320, 40, 8, 128, 4
    y = rng.integers(0, C, n)
    x = (rng.normal(size=(n, T, D)) + 0.3 * y[:, None, None]).astype(np.float32)
    data = fed.make_clients(x, y, fed.iid_partition(n, 16, seed=0), test_fraction=0.0)
    model = npgru.SequenceClassifier(D, H, C, seed=0)
    settings = dict(rounds=4, clients_per_round=16, eval_every=0, seed=0, workers=2,
                    training=fed.LocalTraining(lr=0.1, batch_size=32))
    # Warm-up in this process before any fork: compiled kernels are inherited by the workers.
    fed.Simulation(model, data, rounds=1, clients_per_round=1, eval_every=0).run()
    times: dict[str, list[float]] = {"serial": [], "process": []}
    steady: dict[str, list[float]] = {"serial": [], "process": []}
    rounds: dict[str, list[float]] = {"serial": [], "process": []}
    cpu: dict[str, list[float]] = {"serial": [], "process": []}
    finals = {}
    for i in range(repeats):
        for executor in ("serial", "process") if i % 2 == 0 else ("process", "serial"):
            sim = fed.Simulation(model, data, executor=executor, **settings)
            cpu_start, start = _cpu_seconds(), time.perf_counter()
            history = sim.run()
            times[executor].append(time.perf_counter() - start)
            cpu[executor].append(_cpu_seconds() - cpu_start)
            # rounds after the first: without the workers' start and first-touch costs
            steady[executor].append(sum(r["wall_time"] for r in history[1:]))
            rounds[executor] += [r["wall_time"] for r in history[1:]]
            finals[executor] = sim.model_.flat_params.copy()
    medians = {name: statistics.median(t) for name, t in times.items()}
    steady_medians = {name: statistics.median(t) for name, t in steady.items()}
    cpu_medians = {name: statistics.median(t) for name, t in cpu.items()}
    return {
        "setup": f"SequenceClassifier({D}, {H}, {C}), 16 clients × 320 sequences of {T} steps, "
                 "batch 32, 1 local epoch, 16 clients per round × 4 rounds, workers=2",
        "num_params": model.num_params,
        "median_s": medians, "speedup": medians["serial"] / medians["process"],
        "steady_rounds_s": steady_medians,
        "steady_speedup": steady_medians["serial"] / steady_medians["process"],
        # timeit's convention: the fastest run is the one least disturbed by other jobs
        "best_speedup": min(times["serial"]) / min(times["process"]),
        # the same at the grain of one round (after the first), where interference is rarer
        "best_round_s": {name: min(r) for name, r in rounds.items()},
        "best_round_speedup": min(rounds["serial"]) / min(rounds["process"]),
        "cpu_s": cpu_medians,
        # on free cores wall ≈ CPU time: serial's, against the workers' split over two cores
        "speedup_on_free_cores": cpu_medians["serial"] / (cpu_medians["process"] / 2),
        "times": times,
        "bit_identical": bool(np.array_equal(finals["serial"], finals["process"])),
        "backend": npgru.get_backend(),
    }


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def child_calibrate(repeats: int) -> dict:
    """How much two processes can gain here now: perfectly parallel work, 1 vs 2 processes.

    On a shared machine other jobs take cores; this puts the executor's speed-up in context.
    """
    import multiprocessing as mp

    n, ratios = 3_000_000, []
    with mp.get_context("fork").Pool(2) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            _burn(n), _burn(n)
            one = time.perf_counter() - start
            start = time.perf_counter()
            pool.map(_burn, [n, n])
            ratios.append(one / (time.perf_counter() - start))
    return {"ideal_speedup": statistics.median(ratios), "all": ratios,
            "load_average": os.getloadavg()}


def child_blas() -> dict:
    try:
        import numpy  # noqa: F401 - loads the BLAS that threadpool_info reports
        from threadpoolctl import threadpool_info

        keep = ("internal_api", "version", "num_threads", "architecture")
        return {"threadpools": [{k: d.get(k) for k in keep} for d in threadpool_info()]}
    except ImportError:
        return {"threadpools": "threadpoolctl not installed"}


# -- parent side ----------------------------------------------------------------------------
def in_child(*args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def verdicts(results: dict) -> dict:
    ov = results["overhead"]
    worst = {k: max(ov[e][k] for e in ov) for k in ("overhead_ms", "startup_s", "peak_rss_mb")}
    # all processes together, counting each worker's peak in full (shared pages twice)
    process_total = ov["process"]["peak_rss_mb"] + 2 * ov["process"]["worker_peak_rss_mb"]
    return {
        "overhead_ms": worst["overhead_ms"] <= TARGETS["overhead_ms"],
        "startup_s": worst["startup_s"] <= TARGETS["startup_s"],
        "peak_rss_mb": max(worst["peak_rss_mb"], process_total) <= TARGETS["peak_rss_mb"],
        "speedup": results["gru_clients"]["speedup"] >= TARGETS["speedup"],
    }


def markdown(results: dict) -> str:
    ov, gru, ok = results["overhead"], results["gru_clients"], results["targets_met"]
    mark = {True: "met", False: "**missed**"}
    lines = [
        "# Federated simulator benchmark",
        "",
        f"`{results['command']}` on {results['machine']} ({results['cpus']} CPUs), "
        f"{results['date']}. BLAS: {json.dumps(results['blas']['threadpools'])}. "
        f"Removed for the run: {results['env_removed'] or 'nothing'}.",
        "",
        f"## Simulator overhead — {ov['serial']['num_params']:,}-parameter model, 1,000 clients, "
        "100 per round × 10 rounds, trivial client fit",
        "",
        "| executor | overhead / client-round | start-up | shut-down | `import npgru` | "
        "peak RSS main | peak RSS per worker |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in ov.items():
        worker = "—" if r["worker_peak_rss_mb"] is None else f"{r['worker_peak_rss_mb']:.0f} MB"
        lines.append(
            f"| {name} | {r['overhead_ms']:.3f} ms | {r['startup_s'] * 1e3:.0f} ms | "
            f"{r['shutdown_s'] * 1e3:.0f} ms | {r['import_s'] * 1e3:.0f} ms | "
            f"{r['peak_rss_mb']:.0f} MB | {worker} |"
        )
    lines += [
        "",
        "Medians over repeats. Overhead is the rounds' wall time divided by the client-rounds: "
        "sampling, broadcast, result transfer, validation, streaming aggregation and history. "
        "Flower 1.42 on the same machine and set-up: ≈27 ms per client-round, ≈10 s start-up "
        "and shut-down, 1.2–1.5 GB RSS (measured separately, not by this script).",
        "",
        "## Real GRU clients: process vs serial executor",
        "",
        f"{gru['setup']} ({gru['num_params']:,} parameters, {gru['backend']} backend).",
        "",
        " · ".join(f"{name} {t:.2f} s" for name, t in gru["median_s"].items())
        + f" · **speed-up {gru['speedup']:.2f}×** (medians of "
        f"{len(gru['times']['serial'])}, interleaved; all runs: "
        f"{json.dumps({k: [round(t, 2) for t in v] for k, v in gru['times'].items()})}). "
        f"Fastest runs: {min(gru['times']['serial']):.2f} s vs "
        f"{min(gru['times']['process']):.2f} s, {gru['best_speedup']:.2f}×. "
        f"Rounds 2–4 alone (workers started and warm): serial "
        f"{gru['steady_rounds_s']['serial']:.2f} s · process "
        f"{gru['steady_rounds_s']['process']:.2f} s · {gru['steady_speedup']:.2f}×; fastest "
        f"single round {gru['best_round_s']['serial']:.3f} s vs "
        f"{gru['best_round_s']['process']:.3f} s, {gru['best_round_speedup']:.2f}×. "
        f"Same final model bit for bit: {gru['bit_identical']}. Both executors run clients on one "
        "BLAS thread (npgru.fed pins it: a threaded BLAS changes the bits).",
        "",
        f"CPU time (medians): serial {gru['cpu_s']['serial']:.2f} s, process "
        f"{gru['cpu_s']['process']:.2f} s over both workers. On two free cores a run takes "
        "about its CPU time (serial) or half of it (two busy workers): a projected "
        f"**{gru['speedup_on_free_cores']:.2f}×** — an estimate from CPU times, not a measured "
        "speed-up.",
        "",
        "What two processes could gain on this machine at the time (perfectly parallel "
        "pure-Python work, 2 processes vs 1, median): "
        f"{results['calibration_before']['ideal_speedup']:.2f}× before and "
        f"{results['calibration_after']['ideal_speedup']:.2f}× after the GRU runs (load "
        f"average {results['calibration_before']['load_average'][0]:.1f} → "
        f"{results['calibration_after']['load_average'][0]:.1f} on {results['cpus']} CPUs).",
        "",
        "## Targets (issue 5)",
        "",
        f"- ≤ {TARGETS['overhead_ms']} ms overhead per client-round: {mark[ok['overhead_ms']]}",
        f"- ≤ {TARGETS['startup_s']} s start-up: {mark[ok['startup_s']]}",
        f"- ≤ {TARGETS['peak_rss_mb']:.0f} MB peak RSS (process executor: main + 2 workers' "
        f"peaks, shared pages counted twice): {mark[ok['peak_rss_mb']]}",
        f"- process ≥ {TARGETS['speedup']}× serial on 2 cores (median whole runs): "
        f"{mark[ok['speedup']]}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = {"overhead": lambda: child_overhead(rest[0], int(rest[1])),
                  "speedup": lambda: child_speedup(int(rest[0])),
                  "calibrate": lambda: child_calibrate(int(rest[0])),
                  "blas": child_blas}[kind]()
        print(json.dumps(result))
        return
    repeats = 2 if args.quick else 5
    results = {
        "command": "python benchmarks/bench_fed.py" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "env_removed": {k: os.environ[k] for k in _UNSET if k in os.environ},
        "blas": in_child("blas"),
        "overhead": {e: in_child("overhead", e, str(repeats)) for e in ("serial", "process")},
        "calibration_before": in_child("calibrate", str(repeats)),
        "gru_clients": in_child("speedup", str(repeats)),
        "calibration_after": in_child("calibrate", str(repeats)),
        "targets": TARGETS,
    }
    results["targets_met"] = verdicts(results)
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "fed.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = markdown(results)
    with open(os.path.join(out, "fed.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
