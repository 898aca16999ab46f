"""npgru (Numba and NumPy backends) against torch.nn.GRU on CPU, side by side in one run.

    .venv/bin/python benchmarks/bench_gru.py            # full run (≈10 min on 2 cores)
    .venv/bin/python benchmarks/bench_gru.py --quick    # short run, fewer repeats

float32, ``batch_first=True``, configs (B, T, D, H, layers) from issue 3. For each: forward,
forward+backward and one streaming step (``GRU.step`` vs ``torch.nn.GRUCell``, one cell per
layer), each timed interleaved (one call of every contender per round, rotating the order)
after a warm-up, reporting the median and the 25–75 % spread. In the same run: the GEMM peak
(float32 1024³ matmul), the achieved GEMM GFLOP/s and % of that peak, ``import npgru`` time
and first-call time in fresh processes (cold and warm Numba cache), and the peak memory of a
training step (forward + backward) against torch, in fresh processes.

Threads are pinned (threadpoolctl and ``torch.set_num_threads``) and reported, with the BLAS
kernel in use. Some machines set ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``, which pins
OpenBLAS to slower kernels: this script re-executes itself without them (its own process
only; the tests leave them alone) and records what it removed.

Writes ``benchmarks/results/gru.json``, ``gru.md`` and ``gru.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_CHILD = "_NPGRU_BENCH_REEXEC"

if __name__ == "__main__" and os.environ.get(_CHILD) is None:
    removed = {k: os.environ[k] for k in _UNSET if k in os.environ}
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    # torch's OpenMP threads spin after each op by default, and OpenBLAS's threads spin after
    # each GEMM; interleaved on 2 cores the two pools starve each other (on a busy machine
    # torch's tiny fwd+bwd went from ≈8 ms to ≈120 ms). OMP_WAIT_POLICY=PASSIVE (the default
    # here; `--omp-wait-policy default` leaves OpenMP alone) gives stable numbers for both,
    # but makes torch's smallest shapes slower than torch alone: every op wakes sleeping
    # threads (tiny fwd+bwd ≈7 ms instead of ≈2 ms). The report says so.
    policy = "PASSIVE"
    for i, arg in enumerate(sys.argv):
        if arg == "--omp-wait-policy" and i + 1 < len(sys.argv):
            policy = sys.argv[i + 1]
        elif arg.startswith("--omp-wait-policy="):
            policy = arg.split("=", 1)[1]
    if policy.lower() != "default":
        env.setdefault("OMP_WAIT_POLICY", policy.upper())
    # glibc hands blocks ≥ 128 KiB back to the system on free unless earlier frees raised its
    # (dynamic) threshold, so each contender's speed depended on what the others had freed:
    # torch's tiny fwd+bwd moved 2.4 → 7.5 ms when npgru stopped freeing big arrays. Fixed
    # thresholds keep freed memory in the heap for everybody (no page faults on reuse).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 * 2**20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(512 * 2**20))
    env[_CHILD] = json.dumps(removed)
    # the BLAS reads these when it loads, so the process must start again without them
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import npgru  # noqa: E402

CONFIGS = {  # name: (B, T, D, H, layers)
    "seed": (64, 50, 10, 64, 2),
    "LEAF": (32, 80, 8, 256, 2),
    "large": (128, 100, 64, 512, 1),
    "device": (1, 100, 10, 64, 1),
    "tiny": (16, 20, 4, 32, 1),
}
# fwd+bwd target: the easier of 0.5× torch and 70 % of the GEMM peak; 0.2× where flops are
# negligible (issue 3, §4)
FWD_BWD_RATIO = {"seed": 0.5, "LEAF": 0.5, "large": 0.5, "device": 0.2, "tiny": 0.2}
PEAK_BAR = {"seed", "LEAF", "large"}


def gemm_flops(B, T, D, H, L) -> float:
    """GEMM flops of forward+backward: 3 × Σ_layers 2·3·(D_in·H + H·H)·B·T."""
    total = 0.0
    for k in range(L):
        d_in = D if k == 0 else H
        total += 2 * 3 * (d_in * H + H * H) * B * T
    return 3 * total


def blas_info() -> list[dict]:
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads",
            "threading_layer")
    return [{k: d.get(k) for k in keep} for d in threadpool_info()]


def measure_peak(reps: int) -> float:
    """float32 GEMM peak (GFLOP/s): the best of ``reps`` 1024³ matmuls through NumPy's BLAS."""
    n = 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def stats(samples: list[float]) -> dict:
    q = np.percentile(samples, [25, 50, 75])
    return {"median": float(q[1]), "p25": float(q[0]), "p75": float(q[2]), "n": len(samples)}


def interleave(fns: dict, runs: int, warmup: int, inner: int = 1) -> dict:
    """Time every callable ``runs`` times, one sample of each per round, rotating the order.

    ``fns`` maps a name to ``fn`` or to ``(setup, fn)``; ``setup`` (e.g. choosing the npgru
    backend) runs before each sample, outside the timed region. ``inner`` calls make one
    sample (for µs-scale calls); samples are per call.
    """
    pairs = {n: (f if isinstance(f, tuple) else (None, f)) for n, f in fns.items()}
    names = list(pairs)
    for name in names:
        setup, fn = pairs[name]
        if setup:
            setup()
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            setup, fn = pairs[name]
            if setup:
                setup()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner)
    return {n: stats(s) for n, s in samples.items()}


def build(cfg, torch):
    """npgru and torch GRUs with the same weights, inputs and output gradients."""
    B, T, D, H, L = cfg
    gru = npgru.GRU(D, H, L, batch_first=True, dtype=np.float32, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, D), dtype=np.float32)
    dout = rng.standard_normal((B, T, H), dtype=np.float32)
    tg = cells = None
    if torch is not None:
        tg = torch.nn.GRU(D, H, L, batch_first=True)
        tg.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in gru.state_dict().items()})
        cells = []
        for k in range(L):
            c = torch.nn.GRUCell(D if k == 0 else H, H)
            sd = gru.state_dict()
            c.load_state_dict({n: torch.from_numpy(sd[f"{n}_l{k}"].copy())
                               for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            cells.append(c)
    return gru, x, dout, tg, cells


def bench_config(name, cfg, torch, runs, warmup, backends):
    B, T, D, H, L = cfg
    gru, x, dout, tg, cells = build(cfg, torch)
    fwd, fb, step = {}, {}, {}

    def on(backend, fn):
        return (lambda: npgru.set_backend(backend)), fn

    def np_fwd():
        gru.forward(x)
        gru._cache = None  # forward alone: drop what backward would need

    def np_fb():
        gru.forward(x)
        gru.backward(dout)

    h = np.zeros((L, B, H), dtype=np.float32)
    hout = np.empty_like(h)
    xt = np.ascontiguousarray(x[:, 0])

    def np_step():
        gru.step(xt, h, out=hout)

    for be in backends:
        fwd[f"npgru-{be}"] = on(be, np_fwd)
        fb[f"npgru-{be}"] = on(be, np_fb)
        step[f"npgru-{be}"] = on(be, np_step)
    if torch is not None:
        xt_t, dout_t = torch.from_numpy(x), torch.from_numpy(dout)
        x_req = xt_t.clone().requires_grad_(True)

        def t_fwd():
            with torch.no_grad():
                tg(xt_t)

        def t_fb():
            for p in tg.parameters():
                p.grad = None
            x_req.grad = None
            out, _ = tg(x_req)
            out.backward(dout_t)

        x0 = torch.from_numpy(xt)
        hs_t = [torch.zeros(B, H) for _ in range(L)]

        def t_step():
            with torch.no_grad():
                inp = x0
                for k in range(L):
                    inp = cells[k](inp, hs_t[k])

        fwd["torch"], fb["torch"], step["torch"] = t_fwd, t_fb, t_step
    res = {
        "config": dict(zip("BTDHL", cfg, strict=True)),
        "gemm_flops_fwd_bwd": gemm_flops(*cfg),
        "forward": interleave(fwd, runs, warmup),
        "forward_backward": interleave(fb, runs, warmup),
        # µs-scale calls are timed in groups of 20, so the clock's resolution does not matter
        "step": interleave(step, runs, warmup, inner=20),
    }
    return res


# ---------------------------------------------------------------------------------------
# fresh-process measurements
# ---------------------------------------------------------------------------------------
def _py(code: str, env_extra: dict | None = None) -> str:
    env = dict(os.environ)
    env.pop(_CHILD, None)
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip().splitlines()[-1]


IMPORT_CODE = """
import time; t0 = time.perf_counter(); import npgru; print(time.perf_counter() - t0)
"""
FIRST_CALL_CODE = """
import time; t0 = time.perf_counter()
import numpy as np, npgru
npgru.set_backend("numba")
B, T, D, H, L = {cfg}
gru = npgru.GRU(D, H, L, batch_first=True, seed=0)
x = np.random.default_rng(1).standard_normal((B, T, D), dtype=np.float32)
t1 = time.perf_counter(); out, _ = gru.forward(x); t2 = time.perf_counter()
gru.backward(np.ones_like(out)); t3 = time.perf_counter()
gru.step(x[:, 0], np.zeros((L, B, H), np.float32)); t4 = time.perf_counter()
print(t2 - t1, t3 - t2, t4 - t3, t2 - t0)
"""
MEMORY_CODE = """
import gc, numpy as np
B, T, D, H, L = {cfg}
which = {which!r}
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
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
    npgru.set_backend(which)
    g = npgru.GRU(D, H, L, batch_first=True, seed=0)
    def step(x, dout):
        g.forward(x); g.backward(dout)
# warm up on a 2×2 slice (imports, kernels from the JIT cache, lazy initialisation), so the
# measured peak holds everything a full-size step keeps, e.g. npgru's reused arrays
step(np.ascontiguousarray(x[:2, :2]), np.ascontiguousarray(dout[:2, :2])); gc.collect()
base = rss()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
step(x, dout); step(x, dout)
print(hwm() - base)
"""


def fresh_process_times(reps: int) -> dict:
    imports = sorted(float(_py(IMPORT_CODE)) for _ in range(reps))
    out = {"import_npgru_s": {"median": statistics.median(imports), "min": imports[0]}}
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        for label in ("cold_cache", "warm_cache"):
            vals = _py(FIRST_CALL_CODE.format(cfg=CONFIGS["seed"]), env).split()
            fwd, bwd, stp, total = map(float, vals)
            out[f"first_call_{label}"] = {"config": "seed", "forward_s": fwd, "backward_s": bwd,
                                          "step_s": stp, "import_to_first_output_s": total}
    return out


def peak_memory(names, threads, backends, torch_ok) -> dict:
    env = {"MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "16384"}
    res = {}
    for name in names:
        cfg = CONFIGS[name]
        row = {}
        for which in [*backends, *(["torch"] if torch_ok else [])]:
            code = MEMORY_CODE.format(cfg=cfg, which=which, threads=threads)
            row[which if which == "torch" else f"npgru-{which}"] = int(_py(code, env))
        res[name] = row
    return res


# ---------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------
def _ms(s: dict) -> str:
    return f"{s['median'] * 1e3:.3g} ({s['p25'] * 1e3:.3g}–{s['p75'] * 1e3:.3g})"


def _us(s: dict) -> str:
    return f"{s['median'] * 1e6:.3g} ({s['p25'] * 1e6:.3g}–{s['p75'] * 1e6:.3g})"


def evaluate(results: dict, peak: float) -> None:
    """Add ratios, GFLOP/s, % of peak and target verdicts to each config's results."""
    for name, r in results["configs"].items():
        flops = r["gemm_flops_fwd_bwd"]
        for op, fl in (("forward", flops / 3), ("forward_backward", flops)):
            for s in r[op].values():
                s["gflops"] = fl / s["median"] / 1e9
                s["pct_peak"] = 100 * s["gflops"] / peak
        if "torch" not in r["forward"]:
            continue
        tgt = {}
        t_fb = r["forward_backward"]["torch"]["median"]
        bar = FWD_BWD_RATIO[name] * t_fb
        if name in PEAK_BAR:
            bar = max(bar, flops / (0.7 * peak * 1e9))  # the easier of the two bars
        tgt["forward_backward_s"] = bar
        tgt["forward_s"] = r["forward"]["torch"]["median"]
        tgt["step_s"] = 0.2 * r["step"]["torch"]["median"]
        r["targets"] = tgt
        for op, key in (("forward", "forward_s"), ("forward_backward", "forward_backward_s"),
                        ("step", "step_s")):
            for who, s in r[op].items():
                if who != "torch":
                    s["ratio_vs_torch"] = s["median"] / r[op]["torch"]["median"]
                    s["meets_target"] = bool(s["median"] <= tgt[key])


def markdown(results: dict) -> str:
    meta = results["meta"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                     f"{b['num_threads']} threads)" for b in meta["blas"])
    lines = [
        "# npgru vs torch.nn.GRU (CPU, float32, batch_first)",
        "",
        f"`{meta['command']}` · {meta['date']} · {meta['cpu']} · threads {meta['threads']} · "
        f"torch {meta.get('torch')} · numpy {meta['numpy']} · numba {meta.get('numba')}",
        "",
        f"BLAS: {blas}; "
        f"removed for this run: {meta['env_removed'] or 'nothing'}; "
        f"OMP_WAIT_POLICY={meta.get('omp_wait_policy')}; glibc malloc "
        + ", ".join(f"{k}={v}" for k, v in (meta.get("malloc") or {}).items()) + ". "
        f"GEMM peak measured in this run: **{results['gemm_peak_gflops']:.0f} GFLOP/s** "
        f"(float32, 1024³).",
        "",
        "Median (25–75 %) of interleaved runs; ratio = npgru / torch (lower is better); "
        "GFLOP/s counts GEMM flops only; target per issue 3 §4.",
        "",
        "Note: with OMP_WAIT_POLICY=PASSIVE (set so that torch's OpenMP threads and OpenBLAS's "
        "threads do not starve each other when interleaved) torch's smallest shapes run slower "
        "than torch alone with its default policy (measured here: tiny fwd+bwd ≈2.0 ms and "
        "GRUCell ≈25 µs alone vs ≈7 ms and ≈115 µs in this table); compare tiny against those. "
        "`--omp-wait-policy default` runs with OpenMP's default instead.",
        "",
        "| config (B,T,D,H,L) | op | torch | npgru numba | ratio | npgru numpy | ratio "
        "| numba GFLOP/s (% peak) | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["configs"].items():
        c = r["config"]
        label = f"{name} ({c['B']},{c['T']},{c['D']},{c['H']},{c['L']})"
        for op, unit, fmt in (("forward", "ms", _ms), ("forward_backward", "ms", _ms),
                              ("step", "µs", _us)):
            row = r[op]
            t = row.get("torch")
            nb, nu = row.get("npgru-numba"), row.get("npgru-numpy")
            cells = [label, f"{op.replace('_', '+')} [{unit}]", fmt(t) if t else "–"]
            for s in (nb, nu):
                cells.append(fmt(s) if s else "–")
                cells.append(f"{s['ratio_vs_torch']:.2f}×" if s and "ratio_vs_torch" in s else "–")
            cells.append(f"{nb['gflops']:.0f} ({nb['pct_peak']:.0f} %)"
                         if nb and "gflops" in nb else "–")
            tg = r.get("targets", {})
            key = {"forward": "forward_s", "forward_backward": "forward_backward_s",
                   "step": "step_s"}[op]
            if key in tg and t:
                scale = 1e3 if unit == "ms" else 1e6
                cells.append(f"≤ {tg[key] * scale:.3g} ({tg[key] / t['median']:.2f}×)")
                cells.append("yes" if nb and nb.get("meets_target") else "**no**")
            else:
                cells += ["–", "–"]
            lines.append("| " + " | ".join(cells) + " |")
    fp = results.get("fresh_process", {})
    if fp:
        lines += ["", "## Start-up (fresh processes)", ""]
        imp = fp["import_npgru_s"]
        lines.append(f"- `import npgru`: {imp['median'] * 1e3:.0f} ms median "
                     f"(min {imp['min'] * 1e3:.0f} ms); target ≤ 250 ms")
        for label in ("cold_cache", "warm_cache"):
            f = fp[f"first_call_{label}"]
            lines.append(
                f"- first call, {label.replace('_', ' ')} (Numba, seed config): forward "
                f"{f['forward_s']:.2f} s, backward {f['backward_s']:.2f} s, step "
                f"{f['step_s']:.2f} s; import → first output {f['import_to_first_output_s']:.2f} s"
                + (" (target ≤ 2 s)" if label == "warm_cache" else ""))
    mem = results.get("peak_memory_bytes", {})
    if mem:
        lines += ["", "## Peak memory of one training step (forward + backward), fresh process",
                  "", "Peak RSS of two full-size steps above the state after a 2×2 warm-up "
                  "(VmHWM reset; every block ≥ 16 KiB mmapped, so freed memory leaves RSS, "
                  "torch's per-step tensors included; npgru's reused arrays count).", "",
                  "| config | " + " | ".join(next(iter(mem.values()))) + " |",
                  "|---|" + "---|" * len(next(iter(mem.values())))]
        for name, row in mem.items():
            lines.append(f"| {name} | " + " | ".join(f"{v / 2**20:.1f} MiB" for v in row.values())
                         + " |")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["configs"])
    ops = ("forward", "forward_backward", "step")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=False)
    for ax, op in zip(axes, ops, strict=True):
        xs = np.arange(len(names))
        for i, who in enumerate(("npgru-numba", "npgru-numpy")):
            vals = [results["configs"][n][op].get(who, {}).get("ratio_vs_torch", np.nan)
                    for n in names]
            ax.bar(xs + (i - 0.5) * 0.38, vals, 0.38, label=who)
        ax.axhline(1.0, color="k", lw=1, label="torch = 1")
        ax.set_xticks(xs, names)
        ax.set_yscale("log")
        ax.set_title(f"{op.replace('_', '+')}: time / torch")
    axes[0].legend(fontsize=8)
    fig.suptitle("npgru vs torch.nn.GRU, float32 CPU (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(path: str, text: str) -> None:
    """Write atomically: a temp file, then rename."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and fresh-process runs")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--runs", type=int, default=None, help="timed runs per contender (≥ 20)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated config names")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-fresh", action="store_true", help="skip fresh-process measurements")
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY for this run (read before start-up), or 'default'")
    args = ap.parse_args(argv)
    runs = args.runs or (7 if args.quick else 25)
    warmup = 2 if args.quick else 3
    names = [n.strip() for n in args.configs.split(",") if n.strip()]

    from threadpoolctl import threadpool_limits

    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    backends = ["numba", "numpy"] if npgru._backend.numba_available() else ["numpy"]
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?") if os.path.exists("/proc/cpuinfo") else "?"
    results: dict = {"configs": {}}
    with threadpool_limits(args.threads):
        results["meta"] = {
            "command": "python benchmarks/bench_gru.py" + (" --quick" if args.quick else "")
            + ("" if args.omp_wait_policy == "PASSIVE" else
               f" --omp-wait-policy {args.omp_wait_policy}"),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": f"{cpu} ×{os.cpu_count()}",
            "threads": args.threads,
            "numpy": np.__version__,
            "numba": numba_version,
            "torch": getattr(torch, "__version__", None),
            "torch_threads": torch.get_num_threads() if torch else None,
            "blas": blas_info(),
            "env_removed": json.loads(os.environ.get(_CHILD) or "{}"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "malloc": {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_",
                                                       "MALLOC_TRIM_THRESHOLD_")},
            "runs": runs,
            "warmup": warmup,
        }
        peak0 = measure_peak(5 if args.quick else 10)
        for name in names:
            print(f"[bench] {name} {CONFIGS[name]}", flush=True)
            results["configs"][name] = bench_config(name, CONFIGS[name], torch, runs, warmup,
                                                    backends)
        peak1 = measure_peak(5 if args.quick else 10)
        results["gemm_peak_gflops"] = max(peak0, peak1)
        results["gemm_peak_passes"] = [peak0, peak1]
        evaluate(results, results["gemm_peak_gflops"])
    if not args.no_fresh:
        print("[bench] fresh processes", flush=True)
        results["fresh_process"] = fresh_process_times(3 if args.quick else 7)
        mem_names = ["seed", "large"] if args.quick else names
        results["peak_memory_bytes"] = peak_memory(mem_names, args.threads, backends,
                                                   torch is not None)
    os.makedirs(args.out, exist_ok=True)
    md = markdown(results)
    _write(os.path.join(args.out, "gru.json"), json.dumps(results, indent=1))
    _write(os.path.join(args.out, "gru.md"), md)
    png = os.path.join(args.out, "gru.png")
    chart(results, png + ".tmp.png")
    os.replace(png + ".tmp.png", png)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
