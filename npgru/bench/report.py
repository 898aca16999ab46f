"""From timings to verdicts, tables and a chart.

:func:`evaluate` adds to each case its ratio to torch, its GEMM rate and share of the
measured GEMM peak, the GEMM-bound limit (the case's GEMM flops at that peak) and the target
it is held to (issue 12 §2); :func:`markdown` and :func:`readme_table` write them out.
"""

from __future__ import annotations

import os
import re

from .workloads import CHARLM_OP

#: forward+backward may take the easier of this share of torch's time and 75 % of the GEMM
#: peak where GEMMs dominate; where they do not, only the share counts
FWD_BWD_SHARE = {"seed": 0.5, "LEAF": 0.5, "large": 0.5, "device": 0.2, "tiny": 0.2}
FWD_BWD_PEAK_SHARE = 0.75
IMPORT_TARGET_S = 0.25
README_BEGIN = "<!-- npgru-bench:gru:begin -->"
README_END = "<!-- npgru-bench:gru:end -->"


def target(name: str, op: str, cfg: dict, torch_s: float, flops: float, peak: float) -> dict:
    """The time a case must not exceed, and why."""
    if op == "forward":
        return {"max_s": torch_s, "rule": "≤ 1.0× torch"}
    if op == "step":
        share = 0.25 if cfg.get("B") == 1 else 1.0
        return {"max_s": share * torch_s, "rule": f"≤ {share}× torch"}
    if op == CHARLM_OP:
        return {"max_s": 0.5 * torch_s, "rule": "≤ 0.5× torch"}
    share = FWD_BWD_SHARE.get(name, 0.5)
    if name in ("device", "tiny"):
        return {"max_s": share * torch_s, "rule": f"≤ {share}× torch"}
    at_peak = flops / (FWD_BWD_PEAK_SHARE * peak * 1e9)
    if at_peak > share * torch_s:
        return {"max_s": at_peak, "rule": f"≥ {FWD_BWD_PEAK_SHARE:.0%} of GEMM peak"}
    return {"max_s": share * torch_s, "rule": f"≤ {share}× torch"}


def evaluate(results: dict) -> None:
    """Add ratios, GEMM rates, GEMM-bound limits and verdicts to every case, in place."""
    peaks = results["gemm_peak_gflops"].get("numpy", {})
    for name, entry in results["cases"].items():
        threads = str(entry["threads"])
        peak = peaks.get(threads)
        for op, by in entry["ops"].items():
            flops = entry["gemm_flops"][op]
            torch_s = by.get("torch", {}).get("median")
            if peak:
                entry.setdefault("gemm_bound_s", {})[op] = flops / (peak * 1e9)
            tgt = target(name, op, entry["config"], torch_s, flops, peak) if torch_s and peak \
                else None
            if tgt:
                entry.setdefault("targets", {})[op] = tgt
            for who, s in by.items():
                s["gflops"] = flops / s["median"] / 1e9
                if peak:
                    s["pct_peak"] = 100 * s["gflops"] / peak
                if who != "torch" and torch_s:
                    s["ratio_vs_torch"] = s["median"] / torch_s
                if who != "torch" and tgt:
                    s["meets_target"] = bool(s["median"] <= tgt["max_s"])
    imp = results.get("startup", {}).get("import_npgru_s")
    if imp:
        imp["target_s"] = IMPORT_TARGET_S
        imp["meets_target"] = bool(imp["median"] <= IMPORT_TARGET_S)


# -- formatting -----------------------------------------------------------------------------
def _t(seconds: float | None) -> str:
    """A time with a unit that keeps 3 significant digits readable."""
    if seconds is None:
        return "–"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _spread(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{_t(s['median'])} ({_t(s['p25'])}–{_t(s['p75'])})"


def _ratio(s: dict | None) -> str:
    return f"{s['ratio_vs_torch']:.2f}×" if s and "ratio_vs_torch" in s else "–"


def primary(results: dict) -> str:
    """The npgru contender the verdicts are about: Numba when it ran, else NumPy."""
    return "npgru-numba" if "npgru-numba" in results["meta"]["contenders"] else "npgru-numpy"


def _label(name: str, entry: dict) -> str:
    c = entry["config"]
    if "T" in c and "D" in c:
        return f"{name} ({c['B']},{c['T']},{c['D']},{c['H']},{c['L']})"
    return f"{name} (B={c['B']}, T={c['T']}, emb {c['embed']}, GRU {c['layers']}×{c['hidden']}, " \
           f"V={c['vocab']})"


OP_LABEL = {"forward": "forward", "forward_backward": "forward+backward",
            "step": "streaming step", CHARLM_OP: "SGD step (1 thread)"}


def _header(results: dict) -> list[str]:
    m = results["meta"]
    pools = []
    for who, info in m["processes"].items():
        for p in info.get("threadpools", []):
            pools.append(f"{who}: {p['internal_api']} {p.get('version') or ''} "
                         f"({p.get('architecture') or '–'}, {p['num_threads']} threads)")
    peaks = ", ".join(f"{lib} {v:.0f} GFLOP/s ({n} thr)" for lib, by in
                      results["gemm_peak_gflops"].items() for n, v in sorted(by.items()))
    lines = [
        f"`{m['command']}` · {m['date']} · **{m['cpu']}** · {m['threads']} threads · "
        + " · ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        "",
        f"Each contender timed alone in its own fresh process with its library's defaults, "
        f"{m['blocks']} blocks alternated, {m['runs']}–{m['max_runs']} runs per case and "
        f"block (as many as fit in {m['case_budget_s']} s); per side the "
        f"better block's median (25–75 % of that block). GEMM peak (float32 1024³, same run): "
        f"{peaks}. torch BLAS: {m.get('torch_blas') or '–'}, CPU capability "
        f"{m.get('torch_cpu_capability') or '–'}.",
        "",
        "Thread pools: " + "; ".join(pools) + ".",
        "",
        f"Environment: removed for the benchmark processes {m['env_removed'] or 'nothing'}; "
        f"threading variables as found: {m['thread_env'] or 'none'}.",
    ]
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{s['what']} ({s['why']})"
                                               for s in results["skipped"]) + "."]
    return lines


def markdown(results: dict) -> str:
    """The full report: every case, both backends, limits and verdicts, start-up, memory."""
    who = primary(results)
    lines = ["# npgru vs torch.nn.GRU (CPU, float32, batch_first)", "", *_header(results), "",
             "Ratio = npgru / torch (lower is better). GEMM-bound = the case's GEMM flops at the "
             "measured numpy peak (no element-wise work): the fastest any implementation of "
             "these GEMMs could be; % peak = npgru's GEMM flops per second against that peak.",
             "",
             "| case | op | torch | npgru numba | ratio | npgru numpy | ratio | GEMM-bound | "
             f"{who} % peak | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results["cases"].items():
        for op, by in entry["ops"].items():
            nb, nu, t = by.get("npgru-numba"), by.get("npgru-numpy"), by.get("torch")
            main = by.get(who)
            tgt = entry.get("targets", {}).get(op)
            cells = [_label(name, entry), OP_LABEL[op], _spread(t), _spread(nb), _ratio(nb),
                     _spread(nu), _ratio(nu), _t(entry.get("gemm_bound_s", {}).get(op)),
                     f"{main['pct_peak']:.0f} %" if main and "pct_peak" in main else "–",
                     f"{tgt['rule']}: ≤ {_t(tgt['max_s'])}" if tgt else "–",
                     ("yes" if main.get("meets_target") else "**no**")
                     if main and "meets_target" in main else "–"]
            lines.append("| " + " | ".join(cells) + " |")
    st = results.get("startup", {})
    if st:
        lines += ["", "## Start-up (fresh processes)", ""]
        imp = st.get("import_npgru_s")
        if imp:
            lines.append(f"- `import npgru`: {imp['median'] * 1e3:.0f} ms median of {imp['n']} "
                         f"(min {imp['min'] * 1e3:.0f} ms; CPU time {imp['cpu_s'] * 1e3:.0f} ms); "
                         f"target ≤ {IMPORT_TARGET_S * 1e3:.0f} ms")
        for label, f in st.get("first_call", {}).items():
            lines.append(f"- first call, {label.replace('_', ' ')} ({f['config']} config): "
                         f"forward {f['forward_s']:.3f} s, backward {f['backward_s']:.3f} s, "
                         f"step {f['step_s']:.4f} s; import → first output "
                         f"{f['import_to_first_output_s']:.2f} s")
    mem = results.get("peak_memory_bytes")
    if mem:
        cols = list(next(iter(mem.values())))
        lines += ["", "## Peak memory of one training step (forward + backward), fresh process",
                  "", "Peak RSS of two full-size steps above the state after a 2×2 warm-up "
                  "(peak reset; every block ≥ 16 KiB mmapped in every contender, so freed memory "
                  "leaves RSS and per-step temporaries count).", "",
                  "| config | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, row in mem.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[c] / 2**20:.1f} MiB" for c in cols)
                         + " |")
    return "\n".join(lines) + "\n"


def readme_table(results: dict) -> str:
    """A compact table for the README: torch, npgru and the ratio per case, and what ran."""
    who = primary(results)
    m = results["meta"]
    lines = ["| case | op | torch | npgru | ratio |", "|---|---|---|---|---|"]
    for name, entry in results["cases"].items():
        for op, by in entry["ops"].items():
            s, t = by.get(who), by.get("torch")
            lines.append(f"| {_label(name, entry)} | {OP_LABEL[op]} | {_t(t and t['median'])} | "
                         f"{_t(s and s['median'])} | {_ratio(s)} |")
    peak = results["gemm_peak_gflops"].get("numpy", {}).get(str(m["threads"]))
    lines += ["", f"Medians, float32, batch_first, {m['threads']} threads (the SGD step: 1), "
              f"{who}, each library alone in its own process with its defaults; "
              f"{m['cpu']}, numpy GEMM peak {peak:.0f} GFLOP/s; {m['date']}. "
              f"Regenerate: `{m['command']}`." if peak else ""]
    return "\n".join(lines) + "\n"


def _readme_pattern() -> re.Pattern:
    return re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)


def has_readme_block(path: str) -> bool:
    """Whether ``path`` is readable and holds the benchmark markers."""
    try:
        with open(path, encoding="utf-8") as f:
            return bool(_readme_pattern().search(f.read()))
    except OSError:
        return False


def replace_readme_block(path: str, table: str) -> bool:
    """Put ``table`` between the README's benchmark markers; False if the markers are absent."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pattern = _readme_pattern()
    if not pattern.search(text):
        return False
    new = pattern.sub(lambda _: f"{README_BEGIN}\n{table}{README_END}", text)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)
    return True


def chart(results: dict, path: str) -> None:
    """Bars of time / torch per case and op (log scale), with the ratio-1 line."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: the global backend stays as it is

    names = list(results["cases"])
    ops = [op for op in OP_LABEL if any(op in e["ops"] for e in results["cases"].values())]
    contenders = [c for c in ("npgru-numba", "npgru-numpy") if c in results["meta"]["contenders"]]
    fig = Figure(figsize=(3.6 * len(ops) + 1, 4))
    axes = fig.subplots(1, len(ops), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        here = [n for n in names if op in results["cases"][n]["ops"]]
        xs = np.arange(len(here))
        width = 0.8 / max(len(contenders), 1)
        for i, who in enumerate(contenders):
            vals = [results["cases"][n]["ops"][op].get(who, {}).get("ratio_vs_torch", np.nan)
                    for n in here]
            ax.bar(xs + (i - (len(contenders) - 1) / 2) * width, vals, width, label=who)
        ax.axhline(1.0, color="k", lw=1, label="torch = 1")
        ax.set_xticks(xs, here, rotation=30)
        ax.set_yscale("log")
        ax.set_title(f"{OP_LABEL[op]}: time / torch", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"npgru vs torch, float32 CPU (lower is better) · {results['meta']['cpu']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
