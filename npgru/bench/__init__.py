"""``npgru bench``: npgru against ``torch.nn.GRU`` on this CPU, fairly, from any install.

Each contender (npgru on Numba, npgru on NumPy, PyTorch) is timed alone in its own fresh
process with its library's defaults, in alternated blocks (:mod:`npgru.bench.harness`), on
the workloads of :mod:`npgru.bench.workloads`: forward, forward+backward and one streaming
step on five shapes (2 threads), and a training step of the federated client's character
model (1 thread). Torch and Numba are optional: without them their rows are skipped, and
the report says so. Writes ``gru.json``, ``gru.md``, ``gru.png`` (with matplotlib) and
``gru_readme.md`` (the compact table) to ``--out``.

    npgru bench --quick              # ≈1 minute
    npgru bench --out results        # the full run (≈3.5 minutes on 2 quiet cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from .._checks import InputValueError
from . import harness, report, startup
from .workloads import CHARLM, CHARLM_OP, CONFIGS, OPS, gemm_flops

CHARLM_NAME = "CharLM"
CASE_NAMES = (*CONFIGS, CHARLM_NAME)
#: blocks per contender; per case and block at least ``runs`` and at most ``max_runs``
#: samples, as many as fit in ``case_budget_s``; warm-up calls; GEMM-peak repeats; fresh
#: processes for the import time; configs whose peak memory is measured; cases by default
MODES: dict[str, dict[str, Any]] = {
    "full": dict(blocks=3, runs=7, max_runs=30, case_budget_s=1.5, warmup=3, peak_reps=10,
                 import_reps=7, memory=list(CONFIGS), cases=[*CONFIGS, "CharLM"]),
    "quick": dict(blocks=2, runs=3, max_runs=10, case_budget_s=0.3, warmup=1, peak_reps=4,
                  import_reps=3, memory=["seed"],
                  cases=["seed", "LEAF", "device", "tiny", "CharLM"]),
    "smoke": dict(blocks=2, runs=2, max_runs=2, case_budget_s=0.0, warmup=1, peak_reps=1,
                  import_reps=1, memory=["tiny"], cases=["tiny", "CharLM"]),
}
# a sample repeats a µs-scale call until it lasts this long, so the clock's resolution and
# the loop's overhead do not count
MIN_SAMPLE_S = 2e-3


def add_arguments(p: argparse.ArgumentParser, out_default: str = "npgru-bench") -> None:
    """The benchmark's options (shared by ``npgru bench`` and ``benchmarks/bench_gru.py``)."""
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="fewer blocks and runs, no large config, memory of one config "
                           "(≈1 minute)")
    mode.add_argument("--smoke", action="store_true",
                      help="the tiny config and the CharLM step once over: checks that "
                           "everything runs (seconds; the numbers mean little)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="threads for every library (the CharLM step always uses 1)")
    p.add_argument("--configs", default=None,
                   help=f"comma-separated cases out of {', '.join(CASE_NAMES)} (default: all; "
                        f"--quick: {','.join(MODES['quick']['cases'])}; --smoke: "
                        f"{','.join(MODES['smoke']['cases'])})")
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated out of {', '.join(harness.CONTENDERS)} "
                        "(default: every one whose library is installed)")
    p.add_argument("--blocks", type=int, default=None,
                   help="blocks per contender (default: 3; --quick, --smoke: 2)")
    p.add_argument("--runs", type=int, default=None,
                   help="at least this many timed runs per case and block (default: 7; --quick "
                        "3, --smoke 2)")
    p.add_argument("--no-startup", action="store_true",
                   help="skip import time, first-call time and peak memory")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="leave OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE set for the benchmark "
                        "processes (by default they are removed: they can pin a slower kernel)")
    p.add_argument("--out", default=out_default, help="directory for the results")
    p.add_argument("--readme", default=None, metavar="PATH",
                   help="also replace the table between the npgru-bench markers in PATH")


def _names(value: str | None, allowed: Sequence[str], default: list[str], what: str) -> list[str]:
    if value is None:
        return default
    names = [n.strip() for n in value.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise InputValueError(f"--{what} must be a comma-separated list out of {', '.join(allowed)}, "
                         f"got {value!r}")
    return names


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         None)
    except OSError:
        model = None
    return f"{model or platform.processor() or platform.machine()} ×{os.cpu_count()}"


def _cases(names: list[str], threads: int) -> list[dict]:
    cases = []
    for name in names:
        if name == CHARLM_NAME:
            cases.append({"key": f"{name}/{CHARLM_OP}", "config": name, "op": CHARLM_OP,
                          "threads": 1})
        else:
            cases += [{"key": f"{name}/{op}", "config": name, "op": op, "threads": threads}
                      for op in OPS]
    return cases


def run(args: argparse.Namespace, command: str, log=print) -> dict:
    """Run the benchmark the parsed options describe; write and return the results."""
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    blocks = mode["blocks"] if args.blocks is None else args.blocks
    runs = mode["runs"] if args.runs is None else args.runs
    if blocks < 1 or runs < 1 or args.threads < 1:
        raise InputValueError(f"--blocks, --runs and --threads must be ≥ 1, got {blocks}, {runs}, "
                         f"{args.threads}")
    names = _names(args.configs, CASE_NAMES, mode["cases"], "configs")
    if args.readme and not report.has_readme_block(args.readme):  # refuse before the run
        raise InputValueError(f"--readme {args.readme}: no {report.README_BEGIN} … "
                              f"{report.README_END} block to replace")
    skipped = []
    if args.configs is None and len(names) < len(CASE_NAMES):
        left = [n for n in CASE_NAMES if n not in names]
        skipped.append({"what": f"cases {', '.join(left)}",
                        "why": f"{'--smoke' if args.smoke else '--quick'}; name them with "
                               "--configs, or run without it"})
    installed = {"npgru-numba": harness.available("numba"), "npgru-numpy": True,
                 "torch": harness.available("torch")}
    why = {"npgru-numba": "numba is not installed (pip install numba)",
           "torch": "torch is not installed (pip install torch): no comparison, no targets"}
    wanted = _names(args.contenders, harness.CONTENDERS, list(harness.CONTENDERS), "contenders")
    contenders = []
    for c in wanted:
        if installed[c]:
            contenders.append(c)
        else:
            skipped.append({"what": f"{c} rows", "why": why[c]})
            log(f"[bench] skipping {c}: {why[c]}")
    env, removed = harness.child_env(args.keep_openblas_env)
    results: dict = {"meta": {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(), "platform": platform.platform(), "python": platform.python_version(),
        "threads": args.threads, "contenders": contenders, "blocks": blocks, "runs": runs,
        "max_runs": max(runs, mode["max_runs"]), "case_budget_s": mode["case_budget_s"],
        "warmup": mode["warmup"], "min_sample_s": MIN_SAMPLE_S, "env_removed": removed,
        "openblas_pins_kept": bool(args.keep_openblas_env), "thread_env": harness.thread_env(),
    }, "skipped": skipped}
    spec = {"cases": _cases(names, args.threads), "threads": args.threads, "runs": runs,
            "max_runs": max(runs, mode["max_runs"]), "case_budget_s": mode["case_budget_s"],
            "warmup": mode["warmup"], "min_sample_s": MIN_SAMPLE_S,
            "peak_reps": mode["peak_reps"]}
    t0 = time.perf_counter()
    log(f"[bench] {len(spec['cases'])} cases × {len(contenders)} contenders × {blocks} blocks, "
        f"each contender in its own process")
    raw = harness.alternate(contenders, spec, blocks, env, lambda s: log(f"[bench] {s}"))
    _collect(results, raw, names, args.threads)
    if args.no_startup:
        skipped.append({"what": "start-up and memory", "why": "--no-startup"})
    else:
        log("[bench] start-up and memory (fresh processes)")
        backends = [c.split("-", 1)[1] for c in contenders if c.startswith("npgru-")]
        mem_names = [n for n in mode["memory"] if n in names] or [names[0]]
        mem_names = [n for n in mem_names if n in CONFIGS]
        results["startup"] = {
            "import_npgru_s": startup.import_time(env, mode["import_reps"]),
            "first_call": startup.first_call(env, backends or ["numpy"], "seed"),
        }
        if mem_names:
            results["peak_memory_bytes"] = startup.peak_memory(env, mem_names, contenders,
                                                               args.threads)
    results["meta"]["wall_s"] = time.perf_counter() - t0
    report.evaluate(results)
    _write_all(results, args, log)
    return results


def _collect(results: dict, raw: dict, names: list[str], threads: int) -> None:
    """Best block per case and contender, arranged by case name and op."""
    meta = results["meta"]
    meta["processes"] = {c: blocks[0]["info"] for c, blocks in raw.items()}
    meta["worker_wall_s"] = {c: [b["wall_s"] for b in blocks] for c, blocks in raw.items()}
    versions = {"numpy": None, "numba": None, "torch": None, "npgru": None}
    for info in meta["processes"].values():
        for k in versions:
            versions[k] = versions[k] or info.get(k)
    meta["versions"] = versions
    tinfo = meta["processes"].get("torch", {})
    meta["torch_blas"] = tinfo.get("torch_blas")
    meta["torch_cpu_capability"] = tinfo.get("torch_cpu_capability")
    peaks: dict = {}
    for c, blocks in raw.items():
        lib = "torch" if c == "torch" else "numpy"
        for n, v in harness.best_peaks(blocks).items():
            peaks.setdefault(lib, {})[n] = max(peaks.get(lib, {}).get(n, 0.0), v)
    results["gemm_peak_gflops"] = peaks
    best = {c: harness.best_blocks(blocks) for c, blocks in raw.items()}
    cases: dict = {}
    for name in names:
        entry: dict[str, Any]
        if name == CHARLM_NAME:
            entry = {"config": dict(CHARLM), "threads": 1, "ops": {CHARLM_OP: {}}}
        else:
            entry = {"config": dict(zip("BTDHL", CONFIGS[name], strict=True)), "threads": threads,
                     "ops": {op: {} for op in OPS}}
        entry["gemm_flops"] = {op: gemm_flops(op, CONFIGS.get(name)) for op in entry["ops"]}
        for op in entry["ops"]:
            for c in raw:
                entry["ops"][op][c] = best[c][f"{name}/{op}"]
        cases[name] = entry
    results["cases"] = cases


def _write_all(results: dict, args: argparse.Namespace, log) -> None:
    os.makedirs(args.out, exist_ok=True)

    def write(name: str, text: str) -> str:
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        return path

    plots = harness.available("matplotlib")
    if not plots:
        results["skipped"].append({"what": "gru.png", "why": "matplotlib is not installed"})
    md, table = report.markdown(results), report.readme_table(results)
    written = [write("gru.json", json.dumps(results, indent=1) + "\n"), write("gru.md", md),
               write("gru_readme.md", table)]
    if plots:
        png = os.path.join(args.out, "gru.png")
        report.chart(results, png + ".tmp.png")
        os.replace(png + ".tmp.png", png)
        written.append(png)
    if args.readme:
        report.replace_readme_block(args.readme, table)
        written.append(args.readme)
    log(md)
    for s in results["skipped"]:
        log(f"[bench] skipped {s['what']}: {s['why']}")
    log("[bench] wrote " + ", ".join(written))


def command_line(args: argparse.Namespace, prog: str, out_default: str = "npgru-bench") -> str:
    """The command that repeats this run: ``prog`` and every option not at its default."""
    p = argparse.ArgumentParser()
    add_arguments(p, out_default)
    parts = [prog]
    for dest, default in vars(p.parse_args([])).items():
        value = getattr(args, dest, default)
        if value != default:
            flag = "--" + dest.replace("_", "-")
            parts += [flag] if value is True else [flag, str(value)]
    return " ".join(parts)


def main(argv: Sequence[str] | None = None, prog: str = "npgru bench",
         out_default: str = "npgru-bench") -> int:
    """Parse ``argv`` and run (the entry point of ``benchmarks/bench_gru.py``)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(p, out_default)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    run(args, command_line(args, prog, out_default))
    return 0
