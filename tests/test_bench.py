"""`npgru bench` end to end: the packaged benchmark runs from the CLI and writes what it promises.

Only the structure of the results is checked, never a time: timings on a shared machine are
not something a test can assert.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from npgru import bench
from npgru.bench import harness, workloads
from npgru.cli import main

from .conftest import require


def _load(out) -> dict:
    return json.loads((out / "gru.json").read_text())


def _check_case(res: dict, name: str, ops: list[str], contenders: list[str]) -> None:
    entry = res["cases"][name]
    assert sorted(entry["ops"]) == sorted(ops)
    for op in ops:
        assert entry["gemm_flops"][op] > 0
        for c in contenders:
            s = entry["ops"][op][c]
            assert 0 < s["p25"] <= s["median"] <= s["p75"]
            assert len(s["block_medians"]) == res["meta"]["blocks"]
            assert s["median"] == min(s["block_medians"])  # the better block's median


def test_smoke_run_through_the_cli_writes_every_field(tmp_path):
    require("torch")
    require("numba")
    out = tmp_path / "res"
    assert main(["bench", "--smoke", "--out", str(out)]) == 0
    res = _load(out)
    contenders = ["npgru-numba", "npgru-numpy", "torch"]
    m = res["meta"]
    assert m["contenders"] == contenders and m["threads"] >= 1 and m["blocks"] == 2
    assert m["command"].startswith("npgru bench --smoke")
    assert m["cpu"] and isinstance(m["env_removed"], dict) and isinstance(m["thread_env"], dict)
    assert m["torch_blas"] and m["torch_cpu_capability"]
    for c in contenders:  # each process says which BLAS and how many threads it ran
        assert m["processes"][c]["threadpools"]
    assert m["processes"]["npgru-numba"]["backend"] == "numba"
    assert m["processes"]["npgru-numpy"]["backend"] == "numpy"
    blas = [p for p in m["processes"]["npgru-numpy"]["threadpools"] if p["user_api"] == "blas"]
    assert blas and blas[0]["internal_api"]  # the kernel in use is reported
    for lib in ("numpy", "torch"):
        assert res["gemm_peak_gflops"][lib][str(m["threads"])] > 0
        assert res["gemm_peak_gflops"][lib]["1"] > 0  # the 1-thread CharLM case's peak
    _check_case(res, "tiny", ["forward", "forward_backward", "step"], contenders)
    _check_case(res, "CharLM", ["charlm_step"], contenders)
    for op, tgt in res["cases"]["tiny"]["targets"].items():
        assert tgt["max_s"] > 0 and tgt["rule"]
        assert isinstance(res["cases"]["tiny"]["ops"][op]["npgru-numba"]["meets_target"], bool)
    st = res["startup"]
    assert st["import_npgru_s"]["median"] > 0 and st["import_npgru_s"]["cpu_s"] > 0
    assert set(st["first_call"]) == {"numba_cold_cache", "numba_warm_cache", "numpy"}
    assert set(res["peak_memory_bytes"]["tiny"]) == set(contenders)
    assert [s["what"] for s in res["skipped"]] == ["cases seed, LEAF, large, device"]
    md = (out / "gru.md").read_text()
    assert "| tiny (16,20,4,32,1) | forward |" in md and "CharLM" in md
    assert "| case | op | torch | npgru | ratio |" in (out / "gru_readme.md").read_text()
    assert (out / "gru.png").stat().st_size > 0


def test_without_torch_the_run_says_what_it_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "available", lambda module: module != "torch")
    out = tmp_path / "res"
    assert main(["bench", "--smoke", "--no-startup", "--contenders", "npgru-numpy,torch",
                 "--out", str(out)]) == 0
    res = _load(out)
    assert res["meta"]["contenders"] == ["npgru-numpy"]
    what = [s["what"] for s in res["skipped"]]
    assert "torch rows" in what and "start-up and memory" in what
    assert "torch is not installed" in capsys.readouterr().out
    _check_case(res, "tiny", ["forward", "forward_backward", "step"], ["npgru-numpy"])
    assert "targets" not in res["cases"]["tiny"]  # no torch, no verdicts


def test_readme_block_is_replaced_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.report.README_BEGIN}\nold\n{bench.report.README_END}\nend\n")
    assert bench.report.replace_readme_block(str(readme), "| new |\n")
    assert readme.read_text() == (f"intro\n{bench.report.README_BEGIN}\n| new |\n"
                                  f"{bench.report.README_END}\nend\n")
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not bench.report.replace_readme_block(str(plain), "| new |\n")


@pytest.mark.parametrize("argv", [["--configs", "nope"], ["--contenders", "numpy"],
                                  ["--runs", "0"], ["--readme", "no-such-README.md"]])
def test_bad_options_are_one_line_errors(argv, tmp_path, capsys):
    assert main(["bench", "--smoke", "--out", str(tmp_path), *argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_workloads_compute_the_same_numbers_on_both_sides():
    torch = require("torch")
    import npgru

    cfg = workloads.CONFIGS["tiny"]
    ref = npgru.GRU(*cfg[2:4], cfg[4], batch_first=True, seed=0)
    t = torch.nn.GRU(*cfg[2:4], cfg[4], batch_first=True)
    t.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in
                       workloads._npgru_weights(cfg).items()})
    x, _ = workloads._data(cfg)
    with torch.no_grad():
        expect = t(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(ref.forward(x)[0], expect, rtol=1e-4, atol=1e-5)
    # the GEMM flop count of the forward: 2·B·T·3H·(D+H) for one layer
    B, T, D, H, L = cfg
    assert workloads.gemm_flops("forward", cfg) == 2 * B * T * 3 * H * (D + H)
    assert workloads.gemm_flops("forward_backward", cfg) == 3 * workloads.gemm_flops("forward",
                                                                                     cfg)


def test_the_profile_splits_a_streaming_step_into_its_gemms_and_the_rest():
    from npgru.bench import profile

    compiled = profile.profile_step("tiny", reps=1)  # small: the compiled cell, no BLAS
    assert set(compiled) == {"step: compiled cell (GEMMs as loops, gates)", "total step"}
    blas = profile.profile_step("seed", reps=1)
    gemms, rest = blas["step: GEMMs (x·W_ihᵀ, h·W_hhᵀ)"], blas["step: gates, finiteness check, copies"]
    assert 0 < gemms <= blas["total step"] and rest >= 0


def test_the_profile_command_prints_both_tables():
    r = subprocess.run([sys.executable, "-m", "npgru.bench.profile", "--configs", "tiny",
                        "--reps", "1", "--threads", "1"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| total forward+backward |" in r.stdout and "| total step |" in r.stdout
    # tiny's loop is compiled (its GEMMs inside): no GEMM phases of its own to sum
    assert "| GEMM phases as timed" in r.stdout and "| 75 % of the peak" in r.stdout
    assert "| GEMM phases as timed (input projection, hidden GEMMs, gradients) | – |" in r.stdout


def test_the_profile_sums_the_gemm_phases_of_a_blas_loop():
    from npgru.bench import profile

    prof = {k: 1.0 + i for i, k in enumerate(profile.GEMM_PHASES)}
    prof["forward: time loop, gates"] = 10.0
    assert profile.gemm_phases(prof) == 1 + 2 + 3 + 4
    assert profile.gemm_phases({**prof, "forward: time loop (compiled)": 1.0}) is None
