"""The federated-learning simulator: clients send parameter deltas, a strategy aggregates them.

Typical use::

    from npgru import fed

    data = fed.make_clients(x, y, fed.dirichlet_partition(y, 100, alpha=0.5))
    sim = fed.Simulation(model, data, fed.FedAdam(server_lr=1e-2), rounds=50,
                         clients_per_round=0.1, training=fed.LocalTraining(epochs=1, lr=0.1),
                         executor="process", checkpoint_dir="runs/a", seed=0)
    history = sim.run(resume=True)
    sim.model_            # the global model
    history.to_json("history.json")

Privacy, compression and robustness are stages that wrap any strategy::

    dp = fed.DifferentialPrivacy(clip=1.0, noise_multiplier=0.8)
    strategy = fed.Compress(fed.DPAggregate(fed.FedAdam(), dp, seed=0), "q8")  # ε in the history
    strategy = fed.RobustAggregate(fed.FedAvg(), "median")

Deterministic by construction: a client's randomness in round t derives from (seed, t,
client_id) only and updates are summed in sampling order, so every executor gives the same
model bit for bit, and a resumed run equals an uninterrupted one.
"""

from .accountant import RDPAccountant
from .aggregate import WeightedMean
from .attacks import ATTACKS, UpdateAttack, apply_attack, choose_attackers
from .client import ClientHook, FitIns, FitRes, HookContext, LocalTraining, local_update
from .compress import COMPRESSORS
from .devices import DeviceProfile
from .executors import EXECUTORS, Executor, ProcessExecutor, SerialExecutor
from .extensions import Extended, from_options
from .partition import (
    dirichlet_partition,
    iid_partition,
    make_clients,
    natural_partition,
    partition_summary,
    quantity_skew_partition,
    shard_partition,
)
from .robust import AGGREGATORS, CoordinateMedian, Krum, NormBound, TrimmedMean
from .simulation import History, Simulation
from .stages import (
    STAGES,
    Compress,
    DifferentialPrivacy,
    DPAggregate,
    FedNova,
    RobustAggregate,
    SecureAggregate,
    SecureAggregation,
    Stage,
    WithHooks,
    build_stack,
)
from .strategies import (
    STRATEGIES,
    Ditto,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    FitConfig,
    RoundAggregate,
    Scaffold,
    Strategy,
)

__all__ = [
    "AGGREGATORS",
    "ATTACKS",
    "COMPRESSORS",
    "EXECUTORS",
    "STAGES",
    "STRATEGIES",
    "Compress",
    "DPAggregate",
    "FedNova",
    "RobustAggregate",
    "SecureAggregate",
    "Stage",
    "WithHooks",
    "apply_attack",
    "build_stack",
    "TrimmedMean",
    "NormBound",
    "Krum",
    "CoordinateMedian",
    "from_options",
    "SecureAggregation",
    "Extended",
    "DifferentialPrivacy",
    "choose_attackers",
    "UpdateAttack",
    "RDPAccountant",
    "DeviceProfile",
    "Ditto",
    "ClientHook",
    "Executor",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "FitConfig",
    "FitIns",
    "FitRes",
    "History",
    "HookContext",
    "LocalTraining",
    "ProcessExecutor",
    "RoundAggregate",
    "Scaffold",
    "SerialExecutor",
    "Simulation",
    "Strategy",
    "WeightedMean",
    "dirichlet_partition",
    "iid_partition",
    "local_update",
    "make_clients",
    "natural_partition",
    "partition_summary",
    "quantity_skew_partition",
    "shard_partition",
]
