"""Time to accuracy on simulated phones: FedAvg, FedProx, over-selection and FedBuff.

    .venv/bin/python benchmarks/bench_time.py                  # the published run
    .venv/bin/python benchmarks/bench_time.py --max-clients 6 --hours 0.02 --hidden-size 8 \\
        --out /tmp/bench_time                                   # a smoke test (≈1 min)

Every arm trains the same ``CharLM(vocab, 8, H)`` on the same Shakespeare roles (next
character, ``--seq-len`` windows) with the ``mobile`` device population of
:mod:`npgru.fed.devices` (log-normal compute and bandwidths, daily online windows), 10 local SGD
steps of batch 16 (lr 1.0, gradient clip 5), seed 0, until ``--hours`` of *simulated* time:

- ``fedavg``: 10 clients a round, a deadline (below); late clients are dropped.
- ``fedprox``: FedProx (μ = 0.01), the same deadline, late clients keep the work that fits.
- ``overselect``: FedAvg sampling 13 and counting the first 10 to finish (Bonawitz et al. 2019).
- ``fedbuff``: FedBuff, 10 clients in flight, an update every 5 arrivals (Nguyen et al. 2022).

The deadline is the 75th percentile, over all clients, of a full round's simulated time
(download, 10 steps, upload) on their devices. Each arm evaluates on the pooled test split
every ``--eval-every`` records. Then the final FedAvg model is fine-tuned for one epoch on each
client (``personalized_evaluation``) and compared, client by client, with the global model.

Writes to ``--out`` (default ``benchmarks/results/time``): ``time.json`` (every record of every
arm, the personalisation figures), ``time.md`` (time to ``--target``) and ``time.png``
(accuracy against simulated hours; personalised against global accuracy per client).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = ("fedavg", "fedprox", "overselect", "fedbuff")


class _Enough(Exception):
    """Raised by the callback when an arm has used its simulated hours."""


def deadline_for(data, model, training, seed: int) -> float:
    """The 75th percentile over the clients of a full round's simulated seconds."""
    from npgru.fed.clock import build_clock

    clock = build_clock(model.flat_params.size, data.clients, training, "mobile", seed, None,
                        False)
    size = model.flat_params.size
    times = [clock.time(c.client_id, 1.0, model.flat_params.nbytes, 8 * size).finish_s
             for c in data.clients]
    return float(np.percentile(times, 75))


def run_arm(arm: str, data, args) -> dict:
    from npgru import fed
    from npgru.models import CharLM

    model = CharLM(len(data.meta["vocab"]), 8, args.hidden_size, seed=args.seed)
    training = fed.LocalTraining(lr=1.0, batch_size=16, steps=10, clip_norm=5.0)
    deadline = deadline_for(data, model, training, args.seed)
    per_round = min(10, len(data.clients))
    settings = dict(training=training, rounds=100_000, clients_per_round=per_round,
                    device_profile="mobile", eval_every=args.eval_every, federated_eval=False,
                    seed=args.seed)
    strategy = fed.FedProx(mu=0.01) if arm == "fedprox" else fed.FedAvg()
    if arm == "fedavg":
        settings.update(deadline=deadline)
    elif arm == "fedprox":
        settings.update(deadline=deadline, straggler_policy="partial")
    elif arm == "overselect":
        settings.update(deadline=deadline, over_select=1.3)
    else:
        settings.update(async_buffer=max(1, per_round // 2), max_concurrency=per_round)
    sim = fed.Simulation(model, data, strategy, **settings)
    limit = args.hours * 3600

    def stop(record: dict) -> None:
        if record["sim_time"] >= limit and "test_accuracy" in record:
            raise _Enough

    start = time.perf_counter()
    try:
        sim.run(callback=stop)
    except _Enough:
        pass
    keep = ("round", "status", "num_ok", "sim_time", "wall_time", "test_accuracy", "test_loss",
            "staleness")
    return {"arm": arm, "deadline_s": deadline if arm != "fedbuff" else None,
            "seconds": time.perf_counter() - start,
            "records": [{k: r[k] for k in keep if k in r} for r in sim.history_],
            "model": sim.model_, "training": training}


def personalisation(result: dict, data, seed: int) -> dict:
    """Global and one-epoch fine-tuned accuracy of the final model, client by client."""
    from npgru.fed.client import evaluate_client
    from npgru.fed.executors import clone_model
    from npgru.fed.personalize import personalized_evaluation

    model = result["model"]
    params = model.flat_params.copy()
    scratch = clone_model(model)
    personal = personalized_evaluation(scratch, data.clients, params, {}, result["training"], 1,
                                       seed, 0)
    global_ = [evaluate_client(scratch, c, params) for c in data.clients if c.num_test]
    return {r.client_id: {"global": g.metrics["accuracy"], "personalized": r.metrics["accuracy"]}
            for r, g in zip(personal, global_, strict=True) if r.error is None}


def time_to(records: list[dict], target: float) -> tuple[float | None, int | None]:
    """Simulated hours and records until test accuracy first reaches ``target``."""
    for r in records:
        if r.get("test_accuracy") is not None and r["test_accuracy"] >= target:
            return r["sim_time"] / 3600, r["round"]
    return None, None


def table(results: list[dict], clients: dict, args) -> str:
    lines = [
        "# Time to accuracy on simulated phones (Shakespeare, `mobile` devices)", "",
        f"`python benchmarks/bench_time.py {' '.join(args.argv)}`: see the script's docstring. "
        f"Simulated hours (and records) until the pooled test accuracy first reaches "
        f"{args.target}; a record is a round, or one FedBuff update.", "",
        "| arm | deadline (s) | hours to target | records to target | final accuracy | "
        "simulated hours run | wall s |", "|---|---|---|---|---|---|---|"]
    for res in results:
        hours, rounds = time_to(res["records"], args.target)
        evaluated = [r for r in res["records"] if "test_accuracy" in r]
        final = evaluated[-1]["test_accuracy"] if evaluated else float("nan")
        deadline = "—" if res["deadline_s"] is None else f"{res['deadline_s']:.2f}"
        lines.append(f"| {res['arm']} | {deadline} | "
                     f"{'—' if hours is None else f'{hours:.3f}'} | {rounds or '—'} | "
                     f"{final:.3f} | {res['records'][-1]['sim_time'] / 3600:.3f} | "
                     f"{res['seconds']:.0f} |")
    g = np.array([v["global"] for v in clients.values()])
    p = np.array([v["personalized"] for v in clients.values()])
    lines += ["", f"Personalisation (final FedAvg model, one local epoch on each of {len(g)} "
              f"clients): mean accuracy {g.mean():.3f} global, {p.mean():.3f} personalised; "
              f"better for {(p > g).sum()} clients, worse for {(p < g).sum()}."]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], clients: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for res in results:
        points = [(r["sim_time"] / 3600, r["test_accuracy"]) for r in res["records"]
                  if "test_accuracy" in r]
        left.plot(*zip(*points, strict=True), label=res["arm"])
    left.set(xlabel="simulated hours", ylabel="test accuracy", title="accuracy against time")
    left.legend()
    g = [v["global"] for v in clients.values()]
    p = [v["personalized"] for v in clients.values()]
    bins = np.linspace(0, max(g + p) * 1.05, 20)
    right.hist([g, p], bins=bins, label=["global", "personalised (1 epoch)"])
    right.set(xlabel="client test accuracy", ylabel="clients", title="per client")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-clients", type=int, default=50, help="roles with the most text")
    p.add_argument("--seq-len", type=int, default=40)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--hours", type=float, default=0.25, help="simulated hours per arm")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--target", type=float, default=0.35)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--out", default=os.path.join(HERE, "results", "time"))
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    from npgru.datasets import shakespeare

    data = shakespeare.load(min_chars=10_000, max_clients=args.max_clients, seq_len=args.seq_len,
                            seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    results = []
    for arm in args.arms.split(","):
        results.append(run_arm(arm, data, args))
        last = results[-1]["records"][-1]
        print(f"{arm:>10}: {len(results[-1]['records'])} records, {last['sim_time'] / 3600:.3f} "
              f"simulated h, {results[-1]['seconds']:.0f} s", flush=True)
    clients = personalisation(results[0], data, args.seed)
    with open(os.path.join(args.out, "time.json"), "w") as f:
        json.dump({"argv": args.argv, "clients": clients,
                   "arms": [{k: v for k, v in r.items() if k not in ("model", "training")}
                            for r in results]}, f, indent=1)
    with open(os.path.join(args.out, "time.md"), "w") as f:
        f.write(table(results, clients, args))
    plot(results, clients, os.path.join(args.out, "time.png"))
    print(f"wrote {args.out}/time.{{json,md,png}}")


if __name__ == "__main__":
    main()
