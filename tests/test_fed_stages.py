"""Defences as stages, the config layer, registries, argument checks and resume identities.

Stages compose in any order where the math allows it and then give the same bits; each owns
its description, figures, ``min_clients`` and state; the simulation enforces a strategy's
``min_clients`` and refuses to resume on different data, settings or strategy stacks.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import npgru
from npgru import fed
from npgru._registry import Registry
from npgru.cli import main, make_parser
from npgru.datasets import ClientData, sensors, shakespeare

from ._fed_common import classification_data, classifier, faulty_update

NUM_CLIENTS = 8
DP = fed.DifferentialPrivacy(clip=0.5, noise_multiplier=0.7)
ATTACK = fed.UpdateAttack(frozenset({"client_0", "client_1"}), "scale", 100.0)
UNEVEN = {f"client_{i}": 1 + 4 * (i % 2) for i in range(NUM_CLIENTS)}


def simulate(strategy, rounds=2, steps=None, data=None, **kw):
    settings = dict(rounds=rounds, clients_per_round=4, seed=7, eval_every=0,
                    training=fed.LocalTraining(lr=0.2, batch_size=16, steps=steps))
    settings.update(kw)
    sim = fed.Simulation(classifier(), data or classification_data(NUM_CLIENTS), strategy, **settings)
    return sim, sim.run()


def figures(history):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in history]


# -- composition ----------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,kw", [
    # FedNova's normalisation and a robust rule commute as stages
    (lambda: fed.FedNova(fed.RobustAggregate(fed.FedAvg(), "trimmed:0.2")),
     lambda: fed.RobustAggregate(fed.FedNova(fed.FedAvg()), "trimmed:0.2"), dict(steps=UNEVEN)),
    # attack hooks and compression: the hooks stage may sit inside or outside FedNova
    (lambda: fed.Compress(fed.FedNova(fed.WithHooks(fed.FedAdam(), [ATTACK])), "q8"),
     lambda: fed.Compress(fed.WithHooks(fed.FedNova(fed.FedAdam()), [ATTACK]), "q8"), dict(steps=UNEVEN)),
    # a robust stage and the same rule as FedAvg's own aggregator
    (lambda: fed.RobustAggregate(fed.FedAvg(), "krum:1"),
     lambda: fed.FedAvg(aggregator=functools.partial(fed.Krum, num_byzantine=1)), {}),
    # DP with a clip no update reaches and no noise is the unweighted mean
    (lambda: fed.DPAggregate(fed.FedAvgM(), fed.DifferentialPrivacy(clip=1e9, noise_multiplier=0.0)),
     lambda: fed.FedAvgM(weighted=False), {}),
])
def test_stacks_that_mean_the_same_give_the_same_bits(a, b, kw):
    sim_a, _ = simulate(a(), clients_per_round=6, **kw)
    sim_b, _ = simulate(b(), clients_per_round=6, **kw)
    np.testing.assert_array_equal(sim_a.model_.flat_params, sim_b.model_.flat_params)


def test_a_full_stack_is_bit_identical_on_serial_and_process_executors():
    def run(executor):
        stack = fed.RobustAggregate(fed.Compress(fed.FedNova(fed.WithHooks(fed.Scaffold(), [ATTACK])),
                                                 "topk:0.3"), "median")
        return simulate(stack, rounds=3, steps=UNEVEN, clients_per_round=6, executor=executor,
                        workers=2)

    (serial, h_serial), (process, h_process) = run("serial"), run("process")
    np.testing.assert_array_equal(serial.model_.flat_params, process.model_.flat_params)
    assert figures(h_serial) == figures(h_process)
    assert all(r["rejected"] == [] and r["bytes_up"] > 0 for r in h_serial)


SIMULATOR_KEYS = {"round", "status", "sampled", "ok", "dropped", "partial", "num_sampled", "num_ok",
                  "train_loss", "bytes_up", "bytes_down", "wall_time", "sim_time"}


class CountingFedAvg(fed.FedAvg):
    """FedAvg that counts how often its commit runs."""

    commits = 0

    def commit(self, server_round, params, agg):
        CountingFedAvg.commits += 1
        super().commit(server_round, params, agg)


@pytest.mark.parametrize("wrap,metrics,min_clients", [
    (lambda s: fed.FedNova(s), set(), 1),
    (lambda s: fed.DPAggregate(s, DP), {"epsilon", "dp_clip", "rejected"}, 1),
    (lambda s: fed.Compress(s, "q4"), {"bytes_up"}, 1),
    (lambda s: fed.SecureAggregate(s, fed.SecureAggregation(clip=1.0)), {"bytes_up", "rejected"}, 1),
    (lambda s: fed.RobustAggregate(s, "krum:1"), {"rejected"}, 5),
    (lambda s: fed.WithHooks(s, [ATTACK]), set(), 1),
])
def test_every_stage_describes_itself_reports_its_figures_and_hands_off_to_the_inner_commit(
        wrap, metrics, min_clients):
    inner = CountingFedAvg(server_lr=0.5)
    stage = wrap(inner)
    described = stage.describe()
    assert described["name"] == type(stage).__name__ and described["strategy"] == inner.describe()
    assert stage.min_clients == min_clients
    CountingFedAvg.commits = 0
    _, history = simulate(stage, rounds=2, clients_per_round=6)
    assert CountingFedAvg.commits == 2
    assert set(history[-1]) - SIMULATOR_KEYS == metrics - SIMULATOR_KEYS
    assert metrics <= set(history[-1])


def test_min_clients_of_an_inner_stage_holds_for_the_stack():
    assert fed.Compress(fed.RobustAggregate(fed.FedAvg(), "krum:1"), "q8").min_clients == 5
    assert fed.RobustAggregate(fed.FedAvg(aggregator=functools.partial(fed.Krum, num_byzantine=2)),
                               "median").min_clients == 7


def test_stage_state_is_kept_under_its_own_prefix_and_checked_on_load():
    stack = fed.DPAggregate(fed.FedAdam(), fed.DifferentialPrivacy(0.5, 1.0, target_quantile=0.5,
                                                                   count_stddev=1.0))
    stack.initialize(np.zeros(4), 10)
    state = stack.state_dict()
    assert set(state) == {"m", "v", "dp.rdp", "dp.rounds", "dp.clip"}
    stack.load_state_dict(state)
    with pytest.raises(ValueError, match="DPAggregate state needs"):
        stack.load_state_dict({k: v for k, v in state.items() if k != "dp.clip"})
    with pytest.raises(ValueError, match="FedAdam state needs"):
        stack.load_state_dict({k: v for k, v in state.items() if k != "m"})


def test_a_stage_refuses_what_is_not_a_strategy():
    with pytest.raises(TypeError, match="strategy must be a Strategy"):
        fed.Compress("fedavg", "q8")
    with pytest.raises(TypeError, match="hooks\\[0\\]"):
        fed.WithHooks(fed.FedAvg(), [lambda: None])
    with pytest.raises(TypeError, match="abstract"):
        fed.Strategy()


# -- the config layer -----------------------------------------------------------------------
def test_old_training_keywords_still_work_with_a_deprecation_warning():
    data = classification_data(NUM_CLIENTS)
    with pytest.warns(DeprecationWarning, match="lr=, batch_size=, local_steps=.*training=LocalTraining"):
        old = fed.Simulation(classifier(), data, fed.FedAvg(), rounds=2, clients_per_round=4,
                             lr=0.2, batch_size=16, local_steps=3, seed=7, eval_every=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = fed.Simulation(classifier(), data, fed.FedAvg(), rounds=2, clients_per_round=4, seed=7,
                             eval_every=0, training=fed.LocalTraining(lr=0.2, batch_size=16, steps=3))
    assert old.training == new.training
    old.run()
    new.run()
    np.testing.assert_array_equal(old.model_.flat_params, new.model_.flat_params)


def test_the_config_layer_refuses_mixed_or_unknown_keywords_and_names_what_the_caller_passed():
    data = classification_data(NUM_CLIENTS)
    with pytest.raises(TypeError, match="either training= or"):
        fed.Simulation(classifier(), data, lr=0.1, training=fed.LocalTraining())
    with pytest.raises(TypeError, match="unexpected keyword argument 'local_lr'"):
        fed.Simulation(classifier(), data, local_lr=0.1)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="^local_epochs must"):
        fed.Simulation(classifier(), data, local_epochs=0).run()
    with pytest.raises(ValueError, match="^training.epochs must"):
        fed.Simulation(classifier(), data, training=fed.LocalTraining(epochs=0)).run()
    with pytest.raises(TypeError, match="training must be a LocalTraining"):
        fed.Simulation(classifier(), data, training={"lr": 0.1}).run()


# -- min_clients ----------------------------------------------------------------------------
def faulty_clients(kinds):
    base = classification_data(len(kinds)).clients
    return [ClientData(f"c{i}{kind}", c.x_train, c.y_train, c.x_test, c.y_test)
            for i, (kind, c) in enumerate(zip(kinds, base, strict=True))]


def test_the_simulation_enforces_the_strategys_min_clients():
    # Krum with f = 1 needs 5 updates; one of the 5 sampled clients fails every round
    clients = faulty_clients(["", "", "", "", "raise"])
    sim, history = simulate(fed.RobustAggregate(fed.FedAvg(), "krum:1"), data=clients,
                            clients_per_round=5, local_update=faulty_update)
    assert [r["status"] for r in history] == ["failed", "failed"]
    assert "fewer than min_clients=5" in history[0]["failure"]
    np.testing.assert_array_equal(sim.model_.flat_params, classifier().flat_params)


def test_a_strategy_needing_more_clients_than_a_round_samples_is_refused_up_front():
    with pytest.raises(ValueError, match="strategy's min_clients=7.*samples only 4"):
        simulate(fed.RobustAggregate(fed.FedAvg(), "krum:2"))


# -- registries -----------------------------------------------------------------------------
def test_registries_name_what_the_cli_offers():
    parser = make_parser()
    federate = parser._subparsers._group_actions[0].choices["federate"]
    choices = {a.dest: a.choices for a in federate._actions if a.choices}
    assert list(choices["strategy"]) == list(fed.STRATEGIES)
    assert list(choices["executor"]) == list(fed.EXECUTORS)
    assert fed.STRATEGIES["fedadam"] is fed.FedAdam
    assert isinstance(fed.EXECUTORS["serial"](), fed.SerialExecutor)
    assert list(fed.STAGES) == ["hooks", "fednova", "dp", "compress", "secure_agg", "robust"]
    assert set(fed.AGGREGATORS) == {"mean", "median", "trimmed", "krum", "normclip"}
    assert set(fed.ATTACKS) == {"signflip", "scale", "noise", "labelflip"}
    assert list(fed.COMPRESSORS) == ["q8", "q4", "q2", "topk"]


def test_a_registry_refuses_unknown_and_duplicate_names():
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd': expected one of fedavg, fedavgm"):
        fed.STRATEGIES.resolve("fedsgd")
    with pytest.raises(KeyError, match="unknown stage"):
        fed.STAGES["nope"]
    registry = Registry("thing")
    registry.register("a", int)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", float)
    assert registry.build("a", "3") == 3


def test_build_stack_wraps_in_the_pipeline_order_whatever_the_order_asked():
    stack = fed.build_stack(fed.FedAvg(), {"robust": {"rule": "median"}, "compress": {"spec": "q8"},
                                           "hooks": {"hooks": [ATTACK]}, "fednova": {}})
    assert [type(s).__name__ for s in stack.layers()] == [
        "RobustAggregate", "Compress", "FedNova", "WithHooks", "FedAvg"]
    with pytest.raises(ValueError, match="unknown stage 'dpx'"):
        fed.build_stack(fed.FedAvg(), {"dpx": {}})


def test_apply_attack_reads_the_attack_registry():
    data = classification_data(NUM_CLIENTS)
    same, hooks, fraction = fed.apply_attack("signflip:0.25", data, seed=0)
    assert same is data and fraction == 0.25 and len(hooks[0].attackers) == 2
    with pytest.raises(ValueError, match="attack must be"):
        fed.apply_attack("replace:0.1", data, seed=0)


# -- one exception type per mistake ---------------------------------------------------------
def _sim(**kw):
    return lambda: fed.Simulation(classifier(), classification_data(NUM_CLIENTS), **kw).run()


def _generate(n):
    return lambda: npgru.CharLM(5, 2, 3, seed=0).generate([1, 2], n)


def _opt():
    return npgru.SGD(npgru.Linear(2, 2, seed=0), lr=0.1)


# (call with the bad value, the argument's name as the message gives it)
INT_ARGUMENTS = {
    "GRU.input_size": (lambda v: npgru.GRU(v, 4), "input_size"),
    "GRU.num_layers": (lambda v: npgru.GRU(3, 4, num_layers=v), "num_layers"),
    "Linear.in_features": (lambda v: npgru.Linear(v, 2), "in_features"),
    "Embedding.embedding_dim": (lambda v: npgru.Embedding(5, v), "embedding_dim"),
    "SequenceClassifier.num_classes": (lambda v: npgru.SequenceClassifier(3, 4, v), "num_classes"),
    "SequenceRegressor.seed": (lambda v: npgru.SequenceRegressor(3, 4, 1, seed=v), "seed"),
    "CharLM.generate.n": (lambda v: _generate(v)(), "n"),
    "StepLR.step_size": (lambda v: npgru.StepLR(_opt(), step_size=v), "step_size"),
    "CosineAnnealingLR.T_max": (lambda v: npgru.CosineAnnealingLR(_opt(), T_max=v), "T_max"),
    "Simulation.rounds": (lambda v: _sim(rounds=v)(), "rounds"),
    "Simulation.min_clients": (lambda v: _sim(min_clients=v)(), "min_clients"),
    "Simulation.eval_every": (lambda v: _sim(eval_every=v)(), "eval_every"),
    "Simulation.checkpoint_every": (lambda v: _sim(checkpoint_every=v)(), "checkpoint_every"),
    "Simulation.seed": (lambda v: _sim(seed=v)(), "seed"),
    "LocalTraining.batch_size": (lambda v: _sim(training=fed.LocalTraining(batch_size=v))(),
                                 "training.batch_size"),
    "LocalTraining.steps": (lambda v: _sim(training=fed.LocalTraining(steps={"client_0": v}))(),
                            "training.steps['client_0']"),
    "Krum.num_byzantine": (lambda v: fed.Krum(4, num_byzantine=v), "num_byzantine"),
    "Krum.num_selected": (lambda v: fed.Krum(4, num_selected=v), "num_selected"),
    "krum_scores.num_byzantine": (lambda v: fed.robust.krum_scores(np.zeros((9, 2)), v),
                                  "num_byzantine"),
    "local_norm.steps": (lambda v: fed.fednova.local_norm(v), "local steps"),
    "SecureAggregation.frac_bits": (lambda v: fed.SecureAggregation(clip=1.0, frac_bits=v), "frac_bits"),
    "FixedPointRing.num_clients": (lambda v: fed.secagg.FixedPointRing.for_sum(v, 1.0, 16),
                                   "num_clients"),
    "iid_partition.num_clients": (lambda v: fed.iid_partition(20, v), "num_clients"),
    "RDPAccountant.step.steps": (lambda v: fed.RDPAccountant().step(0.1, 1.0, steps=v), "steps"),
    "DPAggregate.seed": (lambda v: fed.DPAggregate(fed.FedAvg(), DP, seed=v), "seed"),
    "ProcessExecutor.workers": (lambda v: fed.ProcessExecutor(v).start(
        classifier(), classification_data(2).clients, fed.LocalTraining(), fed.local_update),
        "workers"),
    "sensors.load.window": (lambda v: sensors.load(num_devices=2, window=v), "window"),
    "shakespeare.load.seq_len": (lambda v: shakespeare.load(seq_len=v), "seq_len"),
}


@pytest.mark.parametrize("bad", [True, 2.0, "2"], ids=["bool", "float", "str"])
@pytest.mark.parametrize("case", sorted(INT_ARGUMENTS))
def test_a_non_integer_where_an_integer_is_required_is_a_type_error_naming_the_argument(case, bad):
    call, name = INT_ARGUMENTS[case]
    with pytest.raises(TypeError) as info:
        call(bad)
    assert str(info.value).startswith(name), str(info.value)
    assert isinstance(info.value, npgru._checks.InputError)


@pytest.mark.parametrize("case", sorted(INT_ARGUMENTS))
def test_an_integer_out_of_range_is_a_value_error_naming_the_argument(case):
    call, name = INT_ARGUMENTS[case]
    with pytest.raises(ValueError) as info:
        call(-1)
    assert str(info.value).startswith(name), str(info.value)


@pytest.mark.parametrize("case", ["GRU.input_size", "Linear.in_features", "Krum.num_byzantine",
                                  "local_norm.steps", "iid_partition.num_clients", "StepLR.step_size",
                                  "FixedPointRing.num_clients", "CharLM.generate.n"])
def test_numpy_integers_are_accepted_wherever_an_int_is(case):
    INT_ARGUMENTS[case][0](np.int64(2))


@pytest.mark.parametrize("call,name", [
    (lambda v: npgru.Dropout(v), "p"),
    (lambda v: _sim(dropout=v)(), "dropout"),
    (lambda v: _sim(training=fed.LocalTraining(lr=v))(), "training.lr"),
    (lambda v: fed.Simulation(classifier(), classification_data(NUM_CLIENTS), clients_per_round=v).run(),
     "clients_per_round"),
])
def test_a_bool_or_str_where_a_number_is_required_is_a_type_error(call, name):
    for bad in (True, "0.5"):
        with pytest.raises(TypeError, match=f"^{name}"):
            call(bad)


# -- resume identity ------------------------------------------------------------------------
def first_two_rounds(tmp_path, strategy=None, data=None, **kw):
    sim = fed.Simulation(classifier(), data or classification_data(NUM_CLIENTS),
                         strategy or fed.FedAvg(), rounds=2, clients_per_round=4, seed=7,
                         eval_every=0, checkpoint_dir=str(tmp_path),
                         training=kw.pop("training", fed.LocalTraining(lr=0.2, batch_size=16)), **kw)
    sim.run()


def resume(tmp_path, strategy=None, data=None, rounds=3, **kw):
    sim = fed.Simulation(classifier(), data or classification_data(NUM_CLIENTS),
                         strategy or fed.FedAvg(), rounds=rounds, clients_per_round=4, seed=7,
                         eval_every=0, checkpoint_dir=str(tmp_path),
                         training=kw.pop("training", fed.LocalTraining(lr=0.2, batch_size=16)), **kw)
    return sim.run(resume=True)


def edited_data():
    """The same clients, ids and sizes, with one feature of one example changed."""
    data = classification_data(NUM_CLIENTS)
    data.clients[3].x_train[0, 0, 0] += 1.0
    return data


@pytest.mark.parametrize("before,after,named", [
    (dict(), dict(data=edited_data()), "data.sha256"),
    (dict(), dict(strategy=fed.FedAvg(aggregator=functools.partial(fed.Krum, num_byzantine=0))),
     "strategy.aggregator: checkpoint 'npgru.fed.aggregate.WeightedMean', now 'npgru.fed.robust.Krum"),
    (dict(strategy=fed.Compress(fed.FedAvg(), "q8")), dict(strategy=fed.Compress(fed.FedAvg(), "q4")),
     "strategy.spec"),
    (dict(strategy=fed.DPAggregate(fed.FedAvg(), DP)),
     dict(strategy=fed.DPAggregate(fed.FedAvg(), fed.DifferentialPrivacy(0.5, 0.8))),
     "strategy.dp.noise_multiplier"),
    (dict(), dict(training=fed.LocalTraining(lr=0.2, batch_size=16, clip_norm=1.0)),
     "training.clip_norm: checkpoint None, now 1.0"),
    (dict(options={"--seq-len": 80}), dict(options={"--seq-len": 40}),
     "(--seq-len: checkpoint 80, now 40)"),
    (dict(), dict(test_data=(np.zeros((2, 5, 3), np.float32), np.zeros(2, np.int64))), "test_data"),
])
def test_resume_refuses_different_data_settings_or_strategy_naming_what_differs(
        tmp_path, before, after, named):
    first_two_rounds(tmp_path, **before)
    with pytest.raises(ValueError) as info:
        resume(tmp_path, **after)
    assert named in str(info.value) and "cannot resume" in str(info.value)
    assert isinstance(info.value, npgru._checks.InputError)


def test_resume_refuses_fewer_rounds_than_the_checkpoint_has(tmp_path):
    first_two_rounds(tmp_path)
    with pytest.raises(ValueError, match="rounds=1 is smaller than round 2 of the checkpoint"):
        resume(tmp_path, rounds=1)
    assert len(resume(tmp_path, rounds=2)) == 2  # equal: nothing left to run


TINY = ["--max-clients", "3", "--min-chars", "30000", "--hidden-size", "8", "--seq-len", "20",
        "--clients-per-round", "2", "--batch-size", "16", "--quiet", "--eval-every", "0"]


@pytest.mark.parametrize("change,named", [
    (["--seq-len", "24"], "--seq-len: checkpoint 20, now 24"),
    (["--iid"], "--iid: checkpoint False, now True"),
    (["--max-clients", "2"], "--max-clients: checkpoint 3, now 2"),
    (["--aggregator", "median"], "--aggregator: checkpoint 'mean', now 'median'"),
    (["--rounds", "1"], "rounds=1 is smaller than round 2"),
])
def test_federate_resume_refuses_a_changed_run_in_one_line(tmp_path, capsys, change, named):
    out = ["--out", str(tmp_path)]
    assert main(["federate", *TINY, "--rounds", "2", *out]) == 0
    capsys.readouterr()
    args = ["federate", *TINY, "--rounds", "3", *out, "--resume", *change]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines


# -- a new defence is one class -------------------------------------------------------------
class _Capped:
    """An aggregator whose result is another's, scaled down to L2 norm ``cap`` if longer."""

    def __init__(self, aggregator, cap: float) -> None:
        self.aggregator, self.cap, self.capped = aggregator, cap, False

    @property
    def count(self):
        return self.aggregator.count

    def add(self, vector, weight=1.0):
        self.aggregator.add(vector, weight)

    def result(self):
        delta = self.aggregator.result()
        norm = float(np.linalg.norm(delta))
        self.capped = norm > self.cap
        return delta * (self.cap / norm) if self.capped else delta


class DeltaNormCap(fed.Stage):
    """A defence written only against the Stage base: cap the aggregated delta's L2 norm."""

    prefix = "cap"

    def __init__(self, strategy, cap: float) -> None:
        self.cap = cap
        super().__init__(strategy)

    def setup(self) -> None:
        self._capped = np.zeros(1)

    def commit(self, server_round, params, agg):
        agg.delta = capped = _Capped(agg.delta, self.cap)
        super().commit(server_round, params, agg)
        self._capped += capped.capped
        self._metrics = {"capped_rounds": int(self._capped[0])}

    def own_state(self):
        return {"capped": self._capped.copy()}

    def load_own_state(self, state):
        self._capped = np.array(state["capped"], dtype=np.float64)


def test_a_defence_written_against_the_stage_base_composes_checkpoints_and_resumes(tmp_path):
    def stack():
        return fed.Compress(DeltaNormCap(fed.DPAggregate(fed.FedAdam(), DP, seed=1), cap=1e-3), "q8")

    full, full_history = simulate(stack(), rounds=3)
    assert full_history[-1]["capped_rounds"] == 3 and "epsilon" in full_history[-1]
    assert stack().describe()["strategy"]["cap"] == 1e-3
    simulate(stack(), rounds=2, checkpoint_dir=str(tmp_path))
    resumed = fed.Simulation(classifier(), classification_data(NUM_CLIENTS), stack(), rounds=3,
                             clients_per_round=4, seed=7, eval_every=0, checkpoint_dir=str(tmp_path),
                             training=fed.LocalTraining(lr=0.2, batch_size=16))
    history = resumed.run(resume=True)
    np.testing.assert_array_equal(resumed.model_.flat_params, full.model_.flat_params)
    assert figures(history) == figures(full_history)


class Nudge(fed.ClientHook):
    """A client hook without a repr of its own."""

    def __init__(self, by: float) -> None:
        self.by = by

    def on_delta(self, delta, ctx):
        delta += self.by


def test_identities_describe_objects_by_class_and_settings_not_memory_addresses():
    a, b = fed.WithHooks(fed.FedAvg(), [Nudge(0.1)]), fed.WithHooks(fed.FedAvg(), [Nudge(0.1)])
    assert a.describe() == b.describe()
    assert a.describe() != fed.WithHooks(fed.FedAvg(), [Nudge(0.2)]).describe()
    assert a.describe()["hooks"][0]["name"].endswith("Nudge")
