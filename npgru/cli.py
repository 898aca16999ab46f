"""The ``npgru`` command: train, federate, report, generate, bench, info.

Every subcommand explains itself with ``--help``. Bad flags, missing or damaged files and bad
values end with one line on stderr and exit status 2, never a traceback: the flags are checked
here before any data is loaded, and the library refuses bad input with an
:class:`~npgru._checks.InputError`. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from ._checks import InputError

if TYPE_CHECKING:  # imported where used: `npgru --help` stays fast
    from .datasets.base import FederatedData
    from .fed.strategies import Strategy

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


# The lowest value of each integer flag, and (low, high, low allowed?, high allowed?) of each
# real one (None: open). Checked before anything is loaded, so a value that would make every
# step, client or round fail is refused at once.
INT_FLAGS = {
    "epochs": 1, "batch_size": 1, "rounds": 1, "local_epochs": 1, "hidden_size": 1,
    "num_layers": 1, "embed_dim": 1, "max_clients": 1, "seq_len": 1, "min_chars": 1,
    "checkpoint_every": 1, "min_clients": 1, "workers": 1, "eval_every": 0, "seed": 0, "n": 0,
    "personalize_epochs": 0, "async_buffer": 1, "max_concurrency": 1,
}
REAL_FLAGS = {
    "lr": (0, None, False, True), "clip_norm": (0, None, False, True),
    "server_lr": (0, None, False, True), "tau": (0, None, False, True),
    "dp_clip": (0, None, False, True), "mu": (0, None, True, True),
    "ditto_lambda": (0, None, True, True),
    "dp_noise": (0, None, True, True), "temperature": (0, None, True, True),
    "target": (0, 1, True, True),
    "server_momentum": (0, 1, True, False), "dp_delta": (0, 1, False, False),
    "deadline": (0, None, False, True), "over_select": (1, None, True, True),
}


def _flag(dest: str) -> str:
    return "-n" if dest == "n" else "--" + dest.replace("_", "-")


def check_args(args: argparse.Namespace) -> None:
    """Refuse flags no run can use, naming the flag and the valid range (exit status 2)."""
    from ._checks import check_int_range, check_nbytes, check_real_range

    for dest, low in INT_FLAGS.items():
        if getattr(args, dest, None) is not None:
            check_int_range(_flag(dest), getattr(args, dest), low)
    for dest, (low, high, include_low, include_high) in REAL_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            check_real_range(_flag(dest), value, low, high, include_low=include_low,
                             include_high=include_high)
    if getattr(args, "cell", "gru") != "gru" and args.variant != "torch":
        raise UsageError(f"npgru: --variant {args.variant} is a GRU setting; --cell {args.cell} "
                         "takes none (leave --variant out)")
    if getattr(args, "hidden_size", None) is not None:
        from .models import LAYERS

        H, L, D = args.hidden_size, args.num_layers, getattr(args, "embed_dim", 8)
        G = LAYERS[getattr(args, "cell", "gru")].cell.gates
        params = L * G * H * (max(D, H) + H + 2) + 256 * H  # recurrent layers and a head
        activations = args.batch_size * args.seq_len * L * H * 8  # kept for BPTT
        # float32 parameters, gradients, two optimizer moments and float64 deltas; activations
        check_nbytes(f"--hidden-size {H} with --num-layers {L}", 24 * params + 4 * activations)
    if args.command == "generate":
        check_nbytes(f"-n {args.n}", 16 * args.n)  # token ids and the decoded text
    if args.command == "federate":
        _check_federate_args(args)


def _check_federate_args(args: argparse.Namespace) -> None:
    """The option strings parse, and a round can gather the updates it needs."""
    from .fed.attacks import parse_attack
    from .fed.compress import make_compressor
    from .fed.robust import make_aggregator

    cpr = args.clients_per_round
    if cpr < 1 if isinstance(cpr, int) else not 0 < cpr <= 1:
        raise UsageError(f"npgru federate: --clients-per-round must be a count >= 1 or a fraction "
                         f"in (0, 1], got {cpr}")
    need = args.min_clients
    # each option's parser (the aggregator's gives a factory)
    parsers: tuple[tuple[str, Callable[[str], Any]], ...] = (
        ("compress", make_compressor), ("aggregator", make_aggregator), ("attack", parse_attack))
    for dest, parse in parsers:
        spec = getattr(args, dest)
        if spec is None or (dest == "aggregator" and spec == "mean"):
            continue
        try:
            parsed = parse(spec)
        except InputError as e:
            raise UsageError(f"npgru federate: {_flag(dest)} {spec!r}: {e}") from None
        if dest == "aggregator":
            need = max(need, getattr(parsed(1, True), "min_clients", 1))
    if isinstance(cpr, int) and need > cpr:
        raise UsageError(
            f"npgru federate: a round needs {need} valid updates (--min-clients "
            f"{args.min_clients}, --aggregator {args.aggregator}) but --clients-per-round is "
            f"{cpr}: every round would fail")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message} (see --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: …)" only where it says something: not for flags, not for None, and
    not where the help text already explains its default in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return _HelpFormatter(prog, max_help_position=34, width=100)


# -- shared options ------------------------------------------------------------------------
def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["shakespeare", "sensors"], default="shakespeare",
                   help="shipped Shakespeare roles (next character) or synthetic IoT sensors")
    g.add_argument("--task", choices=["forecast", "fault"], default="forecast",
                   help="sensors only: forecast the change to the next reading, or classify faults")
    g.add_argument("--min-chars", type=int, default=10_000,
                   help="shakespeare: keep roles with at least this many characters")
    g.add_argument("--max-clients", type=int, default=60,
                   help="keep at most this many clients (roles with most text; devices)")
    g.add_argument("--seq-len", type=int, default=None,
                   help="characters (steps) per example (default: 80 shakespeare, 32 sensors)")
    g.add_argument("--iid", action="store_true",
                   help="shakespeare: the IID-shuffled twin instead of the natural role split")


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--hidden-size", type=int, default=None,
                   help="GRU state size (default: 128 shakespeare, 32 sensors)")
    g.add_argument("--num-layers", type=int, default=1, help="stacked GRU layers")
    g.add_argument("--embed-dim", type=int, default=8, help="shakespeare: character embedding size")
    g.add_argument("--variant", choices=["torch", "classic"], default="torch",
                   help="GRU equations: PyTorch's form or the classic textbook form")
    from .models import LAYERS

    g.add_argument("--cell", choices=list(LAYERS), default="gru",
                   help="recurrent cell: GRU or LSTM (PyTorch's nn.GRU / nn.LSTM)")


def _run_options(p: argparse.ArgumentParser, out_default: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="seeds everything: same seed, same result")
    g.add_argument("--out", default=out_default,
                   help="directory for history.json, model.npz and curves.png")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-round lines")


# Flags whose default depends on the dataset. Client SGD at lr 1.0 suits the character model's
# cross-entropy but diverges on the sensors' regression, whose windows are also shorter. A sensors
# client holds ~1,500 near-duplicate windows of one device: a local epoch in batches of 10 drifts
# towards that device and the global test loss jumps; batches of 64 and 20 clients per round train
# steadily (federate only: train's --batch-size has one default).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "seq_len": {"shakespeare": 80, "sensors": 32},
    "hidden_size": {"shakespeare": 128, "sensors": 32},
    "lr": {"shakespeare": 1.0, "sensors": 0.3},
    "batch_size": {"shakespeare": 10, "sensors": 64},
    "clients_per_round": {"shakespeare": 10, "sensors": 20},
}


def fill_dataset_defaults(args: argparse.Namespace) -> None:
    """Give every flag left unset (``None``) in :data:`DATASET_DEFAULTS` its dataset's value."""
    for name, by_dataset in DATASET_DEFAULTS.items():
        if hasattr(args, "dataset") and getattr(args, name, 0) is None:
            setattr(args, name, by_dataset[args.dataset])


# -- helpers -------------------------------------------------------------------------------
def load_data(args: argparse.Namespace) -> FederatedData:
    """The dataset the flags describe, as :class:`~npgru.datasets.FederatedData`."""
    from .datasets import sensors, shakespeare

    if args.dataset == "shakespeare":
        return shakespeare.load(min_chars=args.min_chars, max_clients=args.max_clients,
                                seq_len=args.seq_len, iid=args.iid, seed=args.seed)
    return sensors.load(num_devices=args.max_clients, window=args.seq_len, task=args.task,
                        seed=args.seed)


def build_model(data: FederatedData, args: argparse.Namespace) -> Any:
    """A fresh model for the dataset's task, sized by the flags."""
    from .models import CharLM, SequenceClassifier, SequenceRegressor

    common = dict(num_layers=args.num_layers, variant=args.variant, cell=args.cell,
                  seed=args.seed)
    if data.task == "next-token":
        return CharLM(len(data.meta["vocab"]), args.embed_dim, args.hidden_size, **common)
    features = data.clients[0].x_train.shape[-1]
    if data.task == "classification":
        return SequenceClassifier(features, args.hidden_size, data.meta["num_classes"], **common)
    return SequenceRegressor(features, args.hidden_size, data.clients[0].y_train.shape[-1],
                             **common)


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (temp file + rename)."""
    from ._atomic import write_atomic

    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def sample_text(model: Any, prompt: str, n: int, temperature: float, seed: int) -> str:
    """``prompt`` followed by ``n`` generated characters."""
    from .datasets import shakespeare

    ids = model.generate(shakespeare.encode(prompt), n, temperature=temperature, seed=seed)
    return prompt + shakespeare.decode(ids)


def _note_if_no_bar() -> None:
    """One line where a bar would have been drawn but tqdm is not installed."""
    from ._progress import tqdm_available, watched

    if watched() and not tqdm_available():
        print("note: no progress bar (tqdm is not installed)", flush=True)


def _prepare_out(out: str) -> None:
    """Create the run directory and remove what writes killed in an earlier run left there."""
    from ._atomic import remove_stale_temp_files

    os.makedirs(out, exist_ok=True)
    remove_stale_temp_files(out)


#: while a run goes on, curves.png is redrawn at most this often (drawing takes ≈0.5 s)
CURVES_EVERY_S = 30.0


def _write_records(out: str, records: list[dict], x: str, title: str, curves: bool = True) -> bool:
    """history.json and, if ``curves`` and matplotlib is installed, curves.png (atomically).

    Returns whether curves.png was drawn.
    """
    from .plots import plot_curves, plotting_available

    write_json(os.path.join(out, "history.json"), records)
    if not (curves and plotting_available()):
        return False
    plot_curves(records, os.path.join(out, "curves.png"), x=x, title=title)
    return True


def _finish(args: argparse.Namespace, model: Any, records: list[dict], x: str, title: str) -> None:
    from .io import save

    model_path = os.path.join(args.out, "model.npz")
    curves_path = os.path.join(args.out, "curves.png")
    save(model, model_path)
    drawn = _write_records(args.out, records, x, title)
    print(f"model:   {model_path}")
    print(f"history: {os.path.join(args.out, 'history.json')}")
    if drawn:
        print(f"curves:  {curves_path}")
    else:
        print("curves:  skipped (matplotlib is not installed: pip install 'npgru[plots]')")
    if args.dataset == "shakespeare":
        print("sample (ROMEO:, temperature 0.8):")
        print(sample_text(model, "ROMEO:", 200, 0.8, args.seed))


# -- subcommands ---------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> None:
    """The centralised baseline: pool every client's training data and fit one model."""
    from .optim import SGD, Adam
    from .train import fit

    _prepare_out(args.out)
    data = load_data(args)
    model = build_model(data, args)
    X, y = data.pooled("train")
    Xt, yt = data.pooled("test")
    opt = SGD(model, lr=args.lr) if args.optimizer == "sgd" else Adam(model, lr=args.lr)
    records = []
    if not args.quiet:
        _note_if_no_bar()
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        h = fit(model, X, y, epochs=1, batch_size=args.batch_size, optimizer=opt,
                clip_norm=args.clip_norm, progress=not args.quiet, seed=args.seed + epoch)
        test = model.evaluate(Xt, yt)
        rec = {"round": epoch, "train_loss": h["loss"][-1], "test_loss": test["loss"],
               "wall_time": time.perf_counter() - start}
        if "accuracy" in test:
            rec["train_accuracy"] = h["accuracy"][-1]
            rec["test_accuracy"] = test["accuracy"]
        records.append(rec)
        if not args.quiet:
            print(_round_line(rec, "epoch"), flush=True)
    _finish(args, model, records, "round", f"centralised {args.dataset}")


# A strategy constructor's keyword → the flag that sets it (passed where the strategy takes it).
_STRATEGY_FLAGS = {"momentum": "server_momentum", "tau": "tau", "mu": "mu", "lam": "ditto_lambda"}

# federate flags that change neither the model nor the history's figures: every other flag is
# part of a checkpoint's identity, so --resume refuses a run whose flags differ and names the flag.
_NOT_IDENTITY = {"command", "func", "out", "quiet", "resume", "rounds", "executor", "workers",
                 "eval_every", "federated_eval", "checkpoint_every"}


def make_strategy(args: argparse.Namespace) -> Strategy:
    """The strategy ``--strategy`` names (from :data:`npgru.fed.STRATEGIES`), with its options."""
    import inspect

    from . import fed

    cls = fed.STRATEGIES.resolve(args.strategy)
    accepted = inspect.signature(cls).parameters
    kwargs = {key: getattr(args, flag) for key, flag in _STRATEGY_FLAGS.items() if key in accepted}
    if args.server_lr is not None:
        kwargs["server_lr"] = args.server_lr
    return cls(**kwargs)


def build_defences(args: argparse.Namespace, strategy: Strategy, data: FederatedData
                   ) -> tuple[Strategy, FederatedData]:
    """``strategy`` wrapped in the stages the defence and attack flags ask for, and the data
    (an attack may flip labels), built from :data:`npgru.fed.STAGES` in the pipeline's order."""
    from . import fed
    from .fed.robust import check_tolerance, make_aggregator
    from .fed.sampling import clients_per_round_count

    if args.dp_clip is None and args.dp_noise:
        raise UsageError("npgru federate: --dp-noise needs --dp-clip (the L2 bound that sets the "
                         "noise scale)")
    if args.secure_agg and args.dp_clip is None:
        raise UsageError("npgru federate: --secure-agg needs --dp-clip: clients clip to it so "
                         "their updates fit the ring")
    stages: dict = {}
    if args.attack is not None:
        data, hooks, fraction = fed.apply_attack(args.attack, data, args.seed)
        if hooks:
            stages["hooks"] = {"hooks": hooks}
        if args.aggregator != "mean":
            per_round = clients_per_round_count(args.clients_per_round, len(data.clients))
            check_tolerance(make_aggregator(args.aggregator)(1, True), per_round,
                            round(fraction * per_round))
    if args.fednova:
        stages["fednova"] = {}
    if args.dp_clip is not None:
        stages["dp"] = {"dp": fed.DifferentialPrivacy(args.dp_clip, args.dp_noise, args.dp_delta),
                        "seed": args.seed}
    if args.compress is not None:
        stages["compress"] = {"spec": args.compress}
    if args.secure_agg:
        stages["secure_agg"] = {"seed": args.seed}
    if args.aggregator != "mean":
        stages["robust"] = {"rule": args.aggregator}
    return fed.build_stack(strategy, stages), data


def identity_options(args: argparse.Namespace) -> dict:
    """The flags that shape a federated run's result, keyed as typed (``--seq-len``)."""
    return {f"--{k.replace('_', '-')}": v for k, v in sorted(vars(args).items())
            if k not in _NOT_IDENTITY}


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names ("embed,gru")."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _clients_per_round(text: str) -> int | float:
    """A count ("10") or a fraction of all clients ("0.1")."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None


def _summary(record: dict) -> dict:
    """The per-round fields history.json promises, next to the simulator's full record."""
    return {"clients_ok": record.get("num_ok"), "clients_dropped": len(record.get("dropped", {})),
            **record}


def cmd_federate(args: argparse.Namespace) -> None:
    """Federated training: sampled clients train locally and send deltas every round."""
    from . import fed

    _prepare_out(args.out)
    data = load_data(args)
    strategy, data = build_defences(args, make_strategy(args), data)
    model = build_model(data, args)
    training = fed.LocalTraining(optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size,
                                 epochs=args.local_epochs, clip_norm=args.clip_norm)
    sim = fed.Simulation(
        model, data, strategy, training=training, rounds=args.rounds,
        clients_per_round=args.clients_per_round, sampling=args.sampling,
        min_clients=args.min_clients, device_profile=args.device_profile,
        deadline=args.deadline, straggler_policy=args.straggler_policy,
        over_select=args.over_select, personalize_epochs=args.personalize_epochs,
        shared_layers=args.shared_layers, async_buffer=args.async_buffer,
        max_concurrency=args.max_concurrency,
        executor=args.executor, workers=args.workers,
        eval_every=args.eval_every, federated_eval=args.federated_eval,
        checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every, seed=args.seed,
        options=identity_options(args),
    )
    sim.check()  # settings that would fail every round: refused before a bar is drawn
    if not args.quiet:
        n = len(data.clients)
        print(f"{args.dataset}: {n} clients, {sum(c.num_train for c in data.clients):,} training "
              f"examples; model {type(model).__name__} with {model.num_params:,} parameters; "
              f"{sim.strategy!r}", flush=True)
        if "unigram_accuracy" in data.meta:
            print(f"unigram baseline accuracy: {data.meta['unigram_accuracy']:.4f}", flush=True)
    bar = None
    if not args.quiet:
        from ._progress import progress_bar

        _note_if_no_bar()
        bar = progress_bar(args.rounds, "rounds", "round", leave=False)

    title = f"{args.strategy} on {args.dataset}, {len(data.clients)} clients"
    drawn_at = -CURVES_EVERY_S

    def report(record: dict) -> None:
        nonlocal drawn_at
        if bar is not None:
            bar.update(record["round"] - bar.n)
            bar.write(_round_line(_summary(record)))
        # after every round: a run watched or killed midway keeps its record (and its curves,
        # redrawn at most every CURVES_EVERY_S so that short rounds are not slowed by drawing)
        due = time.perf_counter() - drawn_at >= CURVES_EVERY_S
        if _write_records(args.out, [_summary(r) for r in sim.history_], "round", title, due):
            drawn_at = time.perf_counter()

    history = sim.run(resume=args.resume, callback=report)
    if bar is not None:
        bar.close()
    records = [_summary(r) for r in history]
    _finish(args, sim.model_, records, "round", title)


def cmd_generate(args: argparse.Namespace) -> None:
    from .io import load
    from .models import CharLM

    if not os.path.exists(args.model):
        raise UsageError(f"npgru generate: model file not found: {args.model}")
    model = load(args.model)
    if not isinstance(model, CharLM):
        raise UsageError(f"npgru generate: {args.model} holds a {type(model).__name__}, "
                         "not a character model (CharLM)")
    print(sample_text(model, args.prompt, args.n, args.temperature, args.seed))


def cmd_report(args: argparse.Namespace) -> None:
    """Accuracy against round and against wall-clock minutes for several runs, one PNG."""
    from .plots import plotting_available
    from .report import load_run, plot_runs

    if not plotting_available():  # the PNG is all this command makes
        raise UsageError("npgru report: drawing needs matplotlib: pip install 'npgru[plots]'")
    runs = [load_run(path) for path in args.runs]
    plot_runs(runs, args.out, target=args.target)
    for run in runs:
        print(f"{run.label}: {len(run.rounds)} evaluated rounds, best test accuracy "
              f"{max(run.accuracy):.4f}, {run.minutes[-1]:.1f} min")
    print(f"report:  {args.out}")


def cmd_info(args: argparse.Namespace) -> None:
    from . import __version__, _backend

    print(f"npgru {__version__}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    if _backend.numba_available():
        import numba

        print(f"numba {numba.__version__}: available")
    else:
        print("numba: not installed (NumPy kernels only)")
    print(f"backend: {_backend.get_backend()} (NPGRU_BACKEND={os.environ.get('NPGRU_BACKEND', '')})")
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            print(f"blas: {pool.get('internal_api')} {pool.get('version')} "
                  f"{pool.get('architecture')} threads={pool.get('num_threads')}")
    except ImportError:
        pass


def cmd_bench(args: argparse.Namespace) -> None:
    """Time npgru against torch.nn.GRU, each alone in its own process (:mod:`npgru.bench`)."""
    from . import bench

    bench.run(args, bench.command_line(args, "npgru bench"))


def _round_line(rec: dict, label: str = "round") -> str:
    parts = [f"{label} {rec['round']:>3}"]
    for key, name in (("train_loss", "train loss"), ("test_loss", "test loss"),
                      ("test_accuracy", "test acc"), ("epsilon", "ε")):
        v = rec.get(key)
        if isinstance(v, (int, float)):
            parts.append(f"{name} {v:.4f}")
    for key in ("clients_ok", "clients_dropped"):
        v = rec.get(key)
        if v is not None:
            parts.append(f"{key.split('_')[1]} {len(v) if isinstance(v, list) else v}")
    if "wall_time" in rec:
        parts.append(f"{rec['wall_time']:.1f}s")
    return " | ".join(parts)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="npgru", formatter_class=_formatter,
                     description="A from-scratch NumPy GRU and a federated-learning simulator.")
    from . import __version__, fed

    parser.add_argument("--version", action="version", version=f"npgru {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("train", formatter_class=_formatter,
                       help="centralised baseline: one model on all clients' data",
                       description="Train one model on the pooled training data of every client "
                                   "(the centralised baseline for `npgru federate`).")
    _data_options(p)
    _model_options(p)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=5, help="passes over the pooled training data")
    g.add_argument("--batch-size", type=int, default=32, help="examples per step")
    g.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    g.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="optimizer")
    g.add_argument("--clip-norm", type=float, default=5.0, help="global gradient-norm clip")
    _run_options(p, "runs/train")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("federate", formatter_class=_formatter,
                       help="federated training: clients send deltas, a strategy aggregates",
                       description="Simulate federated learning: each round a seeded sample of "
                                   "clients trains locally from the global model and sends its "
                                   "parameter delta; the strategy aggregates them. Writes "
                                   "history.json, model.npz, curves.png (and a checkpoint for "
                                   "--resume) to --out; history.json after every round and "
                                   "curves.png at least every 30 s while it runs, so a run can "
                                   "be watched, and killed without losing its record.")
    _data_options(p)
    _model_options(p)
    g = p.add_argument_group("rounds")
    g.add_argument("--rounds", type=int, default=40, help="federated rounds")
    g.add_argument("--clients-per-round", type=_clients_per_round, default=None,
                   help="clients sampled per round: a count, or a fraction of all clients "
                        "(with --sampling poisson: the expected number) (default: 10 shakespeare, "
                        "20 sensors)")
    g.add_argument("--sampling", choices=["fixed", "poisson"], default="fixed",
                   help="fixed: exactly --clients-per-round clients, without replacement; "
                        "poisson: each client joins with probability q = clients-per-round / "
                        "clients, so a round's size varies. With --dp-clip, epsilon is "
                        "accounted for the scheme used (sampling without replacement, or the "
                        "sampled Gaussian)")
    g.add_argument("--min-clients", type=int, default=1,
                   help="valid updates a round needs to commit")
    g.add_argument("--async-buffer", type=int, default=None, metavar="K",
                   help="FedBuff asynchronous aggregation: clients train concurrently on the "
                        "simulated clock and the server applies an update every K arrivals, "
                        "each weighted by 1/sqrt(1 + staleness); --rounds counts updates, each "
                        "one record with staleness mean/max")
    g.add_argument("--max-concurrency", type=int, default=None, metavar="C",
                   help="with --async-buffer: clients training at once (default: "
                        "--clients-per-round)")
    g = p.add_argument_group("personalisation")
    g.add_argument("--personalize-epochs", type=int, default=0, metavar="E",
                   help="at every evaluation each client fine-tunes the global model for E "
                        "local epochs and is evaluated on its own test split: history gets "
                        "personalized_accuracy/_loss (mean, _worst10) beside the global figures")
    g.add_argument("--shared-layers", type=_names, default=None, metavar="PREFIXES",
                   help="FedPer: average only these parameter groups (comma-separated name "
                        "prefixes, e.g. embed,gru); the rest (the head) stays on each client, "
                        "and the personalised figures use each client's own head")
    g = p.add_argument_group("simulated time (each record gets sim_time, simulated seconds)")
    g.add_argument("--device-profile", choices=["uniform", "mobile"], default="uniform",
                   help="clients' devices: uniform (all alike: 2 GFLOP/s, 20/5 Mbit/s down/up, "
                        "50 ms, always online) or mobile (heavy-tailed speeds and bandwidths, a "
                        "daily online window), drawn from the seed and client id; a round lasts "
                        "as long as its slowest counted client (download, training, upload); "
                        "--sampling fixed without DP samples among the clients online")
    g.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="simulated seconds a round allows; clients not done are dropped (or "
                        "do the work that fits, --straggler-policy partial)")
    g.add_argument("--straggler-policy", choices=["drop", "partial"], default="drop",
                   help="what becomes of a client that cannot finish by --deadline")
    g.add_argument("--over-select", type=float, default=1.0, metavar="F",
                   help="sample F times --clients-per-round clients and count the first "
                        "--clients-per-round to finish (Bonawitz et al. 2019); --sampling fixed")
    g.add_argument("--executor", choices=list(fed.EXECUTORS), default="serial",
                   help="run clients in this process, a process pool, or on Ray (needs the ray "
                        "extra; RAY_ADDRESS joins a cluster); results are bit-identical")
    g.add_argument("--workers", type=int, default=None,
                   help="processes for --executor process (default: CPU count)")
    g.add_argument("--eval-every", type=int, default=1, help="evaluate every this many rounds")
    g.add_argument("--federated-eval", action="store_true",
                   help="also evaluate on every client's test split each round (per-client "
                        "metrics, weighted mean, worst decile); doubles the evaluation time")
    g.add_argument("--checkpoint-every", type=int, default=1,
                   help="write DIR/checkpoint.npz every this many rounds")
    g.add_argument("--resume", action="store_true",
                   help="continue from DIR/checkpoint.npz; ends bit-identical to a full run")
    g = p.add_argument_group("local training")
    g.add_argument("--local-epochs", type=int, default=1, help="passes over a client's data")
    g.add_argument("--batch-size", type=int, default=None,
                   help="examples per local step (default: 10 shakespeare, 64 sensors)")
    g.add_argument("--lr", type=float, default=None,
                   help="client learning rate (default: 1.0 shakespeare, 0.3 sensors)")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd",
                   help="client optimizer (fresh every round)")
    g.add_argument("--clip-norm", type=float, default=5.0, help="client gradient-norm clip")
    g = p.add_argument_group("strategy")
    g.add_argument("--strategy", choices=list(fed.STRATEGIES), default="fedavg",
                   help="server strategy")
    g.add_argument("--server-lr", type=float, default=None,
                   help="server learning rate η_s (default: the strategy's, 1 for FedAvg, "
                        "1e-2 for FedAdam/FedYogi/FedAdagrad)")
    g.add_argument("--server-momentum", type=float, default=0.9, help="fedavgm: momentum")
    g.add_argument("--tau", type=float, default=1e-3,
                   help="fedadam/fedyogi/fedadagrad: adaptivity τ")
    g.add_argument("--mu", type=float, default=0.01, help="fedprox: proximal coefficient μ")
    g.add_argument("--ditto-lambda", type=float, default=0.1, metavar="λ",
                   help="ditto: pull λ of each client's personal model towards the global one "
                        "(personalized_* figures evaluate the personal models)")
    g.add_argument("--fednova", action="store_true",
                   help="FedNova: normalise each delta by the client's number of local steps")
    g = p.add_argument_group("privacy, compression and robustness (compose with any strategy)")
    g.add_argument("--dp-clip", type=float, default=None, metavar="C",
                   help="DP-FedAvg: clip each client's update to L2 norm C")
    g.add_argument("--dp-noise", type=float, default=0.0, metavar="Z",
                   help="DP-FedAvg: Gaussian noise multiplier z on the sum (σ = z·C)")
    g.add_argument("--dp-delta", type=float, default=1e-5, metavar="D",
                   help="δ at which ε is reported per round (RDP accountant)")
    g.add_argument("--secure-agg", action="store_true",
                   help="simulated secure aggregation: the server sees only masked updates "
                        "(needs --dp-clip)")
    g.add_argument("--compress", default=None, metavar="{q8,q4,q2,topk:FRACTION}",
                   help="compress updates: stochastic quantization or top-k with error feedback")
    g.add_argument("--aggregator", default="mean",
                   metavar="{mean,median,trimmed:FRACTION,krum:F,normclip:C}",
                   help="how deltas are combined: the mean, or a robust rule")
    g.add_argument("--attack", default=None,
                   metavar="{signflip,scale:FACTOR,noise:SIGMA,labelflip}:FRACTION",
                   help="simulate this fraction of clients attacking")
    _run_options(p, "runs/federate")
    p.set_defaults(func=cmd_federate)

    p = sub.add_parser("generate", formatter_class=_formatter,
                       help="sample text from a trained character model",
                       description="Continue a prompt with a trained CharLM (model.npz).")
    p.add_argument("--model", required=True, help="path to a model.npz written by train/federate")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue")
    p.add_argument("-n", type=int, default=300, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature (0 = always the most likely character)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("bench", formatter_class=_formatter,
                       help="the GRU benchmark suite (npgru vs torch.nn.GRU)",
                       description="Time npgru (Numba and NumPy backends) against "
                                   "torch.nn.GRU, each alone in its own fresh process with its "
                                   "own defaults, in alternated blocks. torch and numba are "
                                   "optional: without them their rows are skipped and the "
                                   "report says so.")
    from .bench import add_arguments as _bench_options

    _bench_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", formatter_class=_formatter,
                       help="compare runs: accuracy against round and against wall time",
                       description="Draw test accuracy against round and against wall-clock "
                                   "minutes for several runs in one PNG (two panels). A run is "
                                   "a directory written by `npgru federate` (history.json) or "
                                   "by the paper benchmark (paper.json), or such a file.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or their JSON")
    p.add_argument("--out", default="report.png", help="the PNG to write")
    p.add_argument("--target", type=float, default=None,
                   help="draw a horizontal line at this accuracy (e.g. 0.54)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("info", formatter_class=_formatter,
                       help="versions, backend, whether Numba is active",
                       description="Print versions, the kernel backend and the BLAS in use.")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``npgru`` command; returns the exit status."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        fill_dataset_defaults(args)
        check_args(args)
        args.func(args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return EXIT_USAGE
    except (InputError, OSError, ImportError) as e:  # refused input, a path, a missing extra
        print(f"npgru: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("npgru: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
