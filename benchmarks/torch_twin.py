"""The paper run written plainly in PyTorch, as a researcher would: npgru's twin for a race.

    python benchmarks/torch_twin.py --out runs/twin
    python benchmarks/torch_twin.py --rounds 2 --out /tmp/twin      # the first two rounds

The same model (embedding 8 → ``nn.GRU`` 2×256 → linear), started from npgru's initial
weights (through npgru's PyTorch state-dict interop), the same role clients, the same clients
drawn each round (npgru's seeded sampling), the same local SGD (B = 10, E = 5, η = 1.47,
gradients clipped to norm 5, npgru's batch order for each client and round), FedAvg weighted
by examples, in one process with torch's default threads. Every flag of
``paper_shakespeare.py paper`` that applies means the same here, and the twin writes the same
``OUT/paper.json`` (+ ``.md``, ``.png``) after every round, so ``npgru report`` draws both.

Needs PyTorch (``pip install torch``); without it the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import npgru
from npgru.fed.client import _epochs  # npgru's batch order, so both sides see the same batches
from npgru.fed.sampling import TRAINING, clients_per_round_count, make_rng, sample_clients
from npgru.io import to_torch_state_dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_shakespeare as paper  # noqa: E402  (a sibling script, not a package)

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:  # the module still imports (for --help and the tests' skip), main refuses
    torch = None


def require_torch() -> None:
    if torch is None:
        print("torch_twin.py needs PyTorch: pip install torch (the CPU build is enough)",
              file=sys.stderr)
        sys.exit(2)


if torch is not None:
    class CharGRU(nn.Module):
        """Embedding → GRU → linear head on every step: the model of the paper run."""

        def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, embed_dim)
            self.gru = nn.GRU(embed_dim, hidden_size, num_layers, batch_first=True)
            self.fc = nn.Linear(hidden_size, vocab_size)

        def forward(self, x):
            out, _ = self.gru(self.embed(x))
            return self.fc(out)


def twin_of(model: npgru.CharLM) -> CharGRU:
    """A :class:`CharGRU` holding ``model``'s weights (npgru's state dict, PyTorch's names)."""
    cfg = model.config()
    twin = CharGRU(cfg["vocab_size"], cfg["embed_dim"], cfg["hidden_size"], cfg["num_layers"])
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(model).items()})
    return twin


def local_update(model: CharGRU, client, server_round: int, args) -> tuple[int, float]:
    """Train ``model`` (holding the global weights) on one client; return (n_k, mean loss)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=paper.client_lr(args, server_round))
    n = client.num_train
    steps = args.local_epochs * -(-n // args.batch_size)
    batches = _epochs(n, args.batch_size, make_rng(args.seed, server_round, TRAINING,
                                                   client.client_id))
    model.train()
    loss_sum = 0.0
    for _, idx in zip(range(steps), batches, strict=False):
        x = torch.from_numpy(client.x_train[idx].astype(np.int64))
        y = torch.from_numpy(client.y_train[idx].astype(np.int64))
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
        optimizer.step()
        loss_sum += loss.item()
    return n, loss_sum / steps


def federated_round(model: CharGRU, clients: list, server_round: int, args) -> float:
    """One FedAvg round on ``model`` in place: the sampled clients' models, averaged by n_k.

    Returns the round's training loss (the clients' mean losses weighted by n_k).
    """
    ids = [c.client_id for c in clients]
    by_id = dict(zip(ids, clients, strict=True))
    k = clients_per_round_count(paper.clients_per_round(args), len(clients))
    global_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    theta = {name: t.double() for name, t in global_state.items()}
    total = {name: torch.zeros_like(t) for name, t in theta.items()}
    weight = loss_sum = 0.0
    for cid in sample_clients(ids, k, args.seed, server_round):
        model.load_state_dict(global_state)
        n, loss = local_update(model, by_id[cid], server_round, args)
        for name, t in model.state_dict().items():
            total[name] += n * (t.double() - theta[name])  # the weighted mean of the deltas
        weight += n
        loss_sum += n * loss
    model.load_state_dict({name: (theta[name] + total[name] / weight).float()
                           for name in theta})
    return loss_sum / weight


def evaluate(model: CharGRU, x: np.ndarray, y: np.ndarray, batch: int) -> dict:
    """The paper run's test metrics (all positions and the last) of the twin."""
    model.eval()

    def batches():
        with torch.no_grad():
            for s in range(0, len(x), batch):
                xb = torch.from_numpy(x[s:s + batch].astype(np.int64))
                yield model(xb).numpy(), y[s:s + batch]

    return paper.position_metrics(batches())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    paper.add_paper_arguments(p, "runs/twin", cells=("gru",))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    require_torch()
    t0 = time.perf_counter()
    data, model, x_test, y_test = paper.load_setup(args)
    twin = twin_of(model)
    config = {
        "clients": len(data.clients), "clients_per_round": paper.clients_per_round(args),
        "local_epochs": args.local_epochs, "batch_size": args.batch_size, "lr": args.lr,
        "lr_decay": args.lr_decay, "lr_decay_every": args.lr_decay_every,
        "clip_norm": args.clip_norm, "strategy": {"name": "FedAvg", "server_lr": 1.0},
        "model": f"embedding 8 → nn.GRU {args.num_layers}x{args.hidden_size} → linear",
        "params": sum(t.numel() for t in twin.parameters()), "seq_len": args.seq_len,
        "test_windows": len(x_test), "eval_batch": args.eval_batch,
        "implementation": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
        "cpu": paper.cpu_name(), "cpu_count": os.cpu_count(),
        "initial_weights": f"npgru CharLM(seed={args.seed})",
        "setup_s": round(time.perf_counter() - t0, 2),
    }
    record = paper.Record(args.out, os.path.relpath(os.path.abspath(__file__), paper.REPO), args,
                          config, f"PyTorch twin: FedAvg, E={args.local_epochs}, "
                          f"B={args.batch_size}, C={paper.clients_per_round(args)}, η={args.lr}")
    print(f"{len(data.clients)} clients, {config['params']:,} parameters, torch "
          f"{torch.__version__} on {torch.get_num_threads()} threads; writing "
          f"{record.out}/paper.json after every round", flush=True)
    start = time.perf_counter()
    for t in range(1, args.rounds + 1):
        r0 = time.perf_counter()
        train_loss = federated_round(twin, data.clients, t, args)
        round_s = time.perf_counter() - r0
        e0 = time.perf_counter()
        metrics = evaluate(twin, x_test, y_test, args.eval_batch)
        row = {"round": t, **metrics, "train_loss": train_loss, "lr": paper.client_lr(args, t),
               "round_s": round_s, "eval_s": time.perf_counter() - e0,
               "elapsed_s": time.perf_counter() - start}
        why = record.add(row)
        paper.print_row(row)
        if why is not None:
            print(f"stop: {why}", flush=True)
            break
    paper.finish_run(args, record)


if __name__ == "__main__":
    main()
