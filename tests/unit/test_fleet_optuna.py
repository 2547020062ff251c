"""fleetmeter.optuna's logic: budgets, constraint values, the sha256 cache, what a trial records, and that a real
Optuna study sees the constraints. The controller is replaced by an object answering ``predict_batch`` from a
cost table built here (the same path against a real controller: tests/integration/test_scripting.py)."""
from __future__ import annotations

import hashlib
import math

import pytest

from fleetmeter.client import Prediction
from fleetmeter.errors import FailedPrecondition, InvalidArgument
from fleetmeter.optuna import CONSTRAINTS_ATTR, Budget, FleetConstraints, suggest_architecture, tpe_sampler

PLATFORMS = ["laptop-8c-aaaaaa/onnxruntime-1.20/cpu/t1", "phone-4c-bbbbbb/litert-1.0/cpu/t1"]
UNIT = {"latency_ms": "ms", "energy_mj": "mJ", "peak_rss_bytes": "bytes"}


class Costs:
    """``predict_batch`` from a table: a model's cost is (its length in bytes) x the platform's factor; a
    platform may be named by a prefix of its id, and predictions carry the full id."""

    FACTOR = {PLATFORMS[0]: 1.0, PLATFORMS[1]: 3.0}

    def __init__(self, broken: bytes = b"") -> None:
        self.calls = []
        self.broken = broken

    def predict_batch(self, models, platforms, targets, *, shapes=None):
        self.calls.append((len(models), list(platforms), list(targets)))
        for data in models:
            if data == self.broken:
                yield FailedPrecondition("no graph in this file")
                continue
            full = [next(f for f in self.FACTOR if f.startswith(p)) for p in platforms]  # as the controller does
            yield [Prediction(platform=p, target=t, value=len(data) * self.FACTOR[p], lower=None,
                              upper=len(data) * self.FACTOR[p] * 1.5, unit=UNIT[t], predictor_version=1)
                   for p in full for t in targets]


def test_budgets_per_platform_and_their_errors():
    fc = FleetConstraints(Costs(), PLATFORMS, latency_ms=10.0, memory_bytes={PLATFORMS[1]: 2e6})
    assert fc.budgets == (Budget(PLATFORMS[0], "latency_ms", 10.0), Budget(PLATFORMS[1], "latency_ms", 10.0),
                          Budget(PLATFORMS[1], "peak_rss_bytes", 2e6))
    assert fc.names[2] == f"peak_rss_bytes@{PLATFORMS[1]}"
    with pytest.raises(InvalidArgument, match="no budget"):
        FleetConstraints(Costs(), PLATFORMS)
    with pytest.raises(InvalidArgument, match=r"energy_mj: budgets for \['nowhere'\]"):
        FleetConstraints(Costs(), PLATFORMS, energy_mj={"nowhere": 1.0})
    with pytest.raises(InvalidArgument, match="latency_ms budget for .* must be a positive number"):
        FleetConstraints(Costs(), PLATFORMS, latency_ms=-1)
    with pytest.raises(InvalidArgument, match="no platform"):
        FleetConstraints(Costs(), [], latency_ms=1)


def test_values_are_relative_overshoot_and_predictions_are_cached():
    """Fails if a model is asked for twice, if targets with different platforms share a stream (a platform
    without that predictor would fail it), or if the values are not predicted/budget - 1."""
    costs = Costs()
    fc = FleetConstraints(costs, PLATFORMS, latency_ms={PLATFORMS[0]: 8.0, PLATFORMS[1]: 12.0},
                          energy_mj={PLATFORMS[0]: 5.0})
    a, b = b"x" * 4, b"y" * 8
    first = fc.predict([a, b, a])
    assert costs.calls == [(2, PLATFORMS, ["latency_ms"]), (2, [PLATFORMS[0]], ["energy_mj"])]
    assert first[0] == first[2] == {f"latency_ms@{PLATFORMS[0]}": 4.0, f"latency_ms@{PLATFORMS[1]}": 12.0,
                                    f"energy_mj@{PLATFORMS[0]}": 4.0}
    assert fc.predict([b]) == [first[1]] and len(costs.calls) == 2, "cached by sha256"
    assert fc.values(first[0]) == [4.0 / 8.0 - 1, 0.0, 4.0 / 5.0 - 1]
    assert fc.values(first[1]) == [0.0, 24.0 / 12.0 - 1, 8.0 / 5.0 - 1]


def test_paths_prefixes_upper_bounds_and_failures(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"z" * 10)
    upper = FleetConstraints(Costs(), [p.split("/")[0] for p in PLATFORMS], latency_ms=100.0, use_upper=True)
    assert upper.predict([model]) == [{f"latency_ms@{PLATFORMS[0].split('/')[0]}": 15.0,
                                      f"latency_ms@{PLATFORMS[1].split('/')[0]}": 45.0}]
    broken = FleetConstraints(Costs(broken=b"bad"), PLATFORMS, latency_ms=1.0)
    sha = hashlib.sha256(b"bad").hexdigest()[:12]
    with pytest.raises(FailedPrecondition, match=f"^{sha}: no graph in this file"):
        broken.predict([b"fine", b"bad"])
    with pytest.raises(InvalidArgument, match="model file not found"):
        broken.predict([tmp_path / "missing.onnx"])


class _Trial:
    """What evaluate needs of a trial (Optuna < 5 has no set_constraint)."""

    def __init__(self) -> None:
        self.user_attrs = {}
        self.number = 0

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


def test_evaluate_records_and_constraints_func_reads():
    fc = FleetConstraints(Costs(), PLATFORMS, latency_ms=6.0)
    trial = _Trial()
    assert fc.evaluate(trial, b"q" * 3) == [-0.5, 0.5]
    assert trial.user_attrs == {CONSTRAINTS_ATTR: [-0.5, 0.5], f"fleetmeter.latency_ms@{PLATFORMS[0]}": 3.0,
                                f"fleetmeter.latency_ms@{PLATFORMS[1]}": 9.0}
    assert fc.constraints_func(trial) == [-0.5, 0.5] and not fc.feasible(trial)
    assert fc.constraints_func(_Trial()) == [math.inf, math.inf], "a trial never evaluated fits nothing"
    with pytest.raises(InvalidArgument, match="2 trials but 1 models"):
        fc.evaluate_batch([_Trial(), _Trial()], [b"a"])


def test_a_real_study_sees_the_constraints():
    """Fails if Optuna does not get the constraint values (its best feasible trial would then be the largest)."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fc = FleetConstraints(Costs(), PLATFORMS, latency_ms=30.0)  # fits: length * 3 <= 30, so length <= 10

    def objective(trial):
        length = trial.suggest_int("length", 1, 30)
        fc.evaluate(trial, b"m" * length)
        return length

    study = optuna.create_study(direction="maximize", sampler=tpe_sampler(fc, seed=1, n_startup_trials=5))
    study.optimize(objective, n_trials=25)
    for t in study.trials:
        assert fc.feasible(t) == (t.params["length"] <= 10)
        if hasattr(t, "constraints"):  # Optuna >= 5: the named constraints
            assert list(t.constraints.values()) == fc.constraints_func(t)
        else:
            assert list(t.system_attrs["constraints"]) == fc.constraints_func(t)
    assert study.best_trial.params["length"] <= 10


def test_suggest_architecture_follows_the_trial():
    """Fails if the trial's parameters do not decide the network, or a pinned value is suggested anyway."""
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("numpy")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    trial = study.ask()
    arch = suggest_architecture(trial, "mobilenetv2", {"input_size": 32, "num_classes": 10})
    hp = arch.hyperparameters
    assert "input_size" not in trial.params and hp["input_size"] == 32 and hp["num_classes"] == 10
    assert hp["width_mult"] == trial.params["width_mult"]
    # one parameter per drawn value: "kernel" for the first stage, "kernel.1" ... for the next ones
    assert [s[4] for s in hp["stages"]] == [trial.params["kernel"]] + [
        trial.params[f"kernel.{i}"] for i in range(1, len(hp["stages"]))]
    again = optuna.trial.FixedTrial(trial.params)
    assert suggest_architecture(again, "mobilenetv2", {"input_size": 32, "num_classes": 10},
                                name=arch.name).hyperparameters == hp
    with pytest.raises(InvalidArgument, match=r"no hyper-parameter\(s\) \['depthh'\]"):
        suggest_architecture(study.ask(), "mobilenetv2", {"depthh": 2})
    with pytest.raises(InvalidArgument, match="unknown family 'nope'"):
        suggest_architecture(study.ask(), "nope")
