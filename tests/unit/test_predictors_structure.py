"""Structure-aware prediction and honest serving: the additive per-node cost model, the choice among
candidates (baselines included), standing warnings, and the registry round trip of every method."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("onnx")

from fleetmeter.modeler.dataset import Sample  # noqa: E402
from fleetmeter.modeler.features import extract_features  # noqa: E402
from fleetmeter.modeler.registry import Registry  # noqa: E402
from fleetmeter.modeler.serving import PredictorPool  # noqa: E402
from fleetmeter.modeler.evaluation import standing_warnings  # noqa: E402
from fleetmeter.modeler.methods import METHODS, AdditiveCost, train_predictor  # noqa: E402
from fleetmeter.modeler.train import TrainTask, _choose, run_train_task  # noqa: E402
from fleetmeter.modeler.zoo.fam_nasbench201 import arch_from_index, build_nasbench201  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402

#: A synthetic device whose cost is known per node: ms per conv MAC, per pool, per multiply-by-zero, per add.
NODE_COST = {"macs:conv2d": 1e-6, "count:pool_avg": 0.03, "count:mul": 0.011, "count:add": 0.007}
OVERHEAD_MS = 0.25


@pytest.fixture(scope="module")
def nb201_features():
    """Features of 90 small NB201 networks (4 or 8 channels, 1-3 cells a stage: quick to build, and op
    counts, MACs and the number of adds vary apart, so each op type's cost can be told apart)."""
    rng = random.Random(5)
    out = {}
    for index in rng.sample(range(15_625), 90):
        arch = build_nasbench201(f"nb{index}", {"arch": arch_from_index(index), "channels": rng.choice((4, 8)),
                                                "cells_per_stage": rng.randint(1, 3)})
        out[index] = extract_features(onnx_bytes(build_onnx(arch))).model
    return out


def _device_ms(features) -> float:
    return OVERHEAD_MS + sum(c * features.get(k, 0.0) for k, c in NODE_COST.items())


def _samples(features_by_index, cost=_device_ms, family="nasbench201"):
    return [Sample(model_sha256=f"{i:064x}", family=family, platform_id="dev",
                   values={"latency_ms": cost(f)}, features=f) for i, f in features_by_index.items()]


def test_the_additive_model_recovers_a_device_whose_cost_is_known_per_node(nb201_features):
    samples = _samples(nb201_features)
    train, test = samples[:60], samples[60:]
    model = AdditiveCost.fit(train, "latency_ms")
    pred = model.predict(test)
    true = np.array([s.values["latency_ms"] for s in test])
    assert np.max(np.abs(pred / true - 1)) < 0.02
    # What each op type costs in a network is what the device charges for it. Convolutions come with their
    # own ReLU and dominate the MAC total, so their cost is told apart only together with those columns;
    # an add's cost likewise together with the fixed overhead (every network has two reduction adds).
    for sample in test:
        f = sample.features
        costs = model.node_costs(f)
        conv = costs["conv2d"] + costs.get("activation:relu", 0.0) + costs["totals"]
        assert conv == pytest.approx(NODE_COST["macs:conv2d"] * f["macs:conv2d"], rel=0.05)
        assert costs.get("pool_avg", 0.0) == pytest.approx(NODE_COST["count:pool_avg"] * f.get("count:pool_avg", 0),
                                                           rel=0.05, abs=0.01)
        assert costs.get("mul", 0.0) == pytest.approx(NODE_COST["count:mul"] * f.get("count:mul", 0),
                                                      rel=0.05, abs=0.01)
        assert costs.get("add", 0.0) + costs["overhead"] == pytest.approx(
            NODE_COST["count:add"] * f["count:add"] + OVERHEAD_MS, rel=0.05)
    assert all(c >= 0 for c in model.coef)  # a node never makes a model faster


def test_the_additive_model_extrapolates_where_trees_cannot(nb201_features):
    """Train on the smaller networks, predict the largest: a sum of node costs keeps growing."""
    samples = sorted(_samples(nb201_features), key=lambda s: s.values["latency_ms"])
    train, test = samples[:60], samples[-15:]
    true = np.array([s.values["latency_ms"] for s in test])
    additive = train_predictor(train, "latency_ms", method="additive", calibrate=False).predict(test)
    trees = train_predictor(train, "latency_ms", method="opcount_lgbm", calibrate=False).predict(test)
    assert np.median(np.abs(additive / true - 1)) < 0.02 < np.median(np.abs(trees / true - 1))


def test_every_method_round_trips_through_the_registry(nb201_features, tmp_path):
    samples = _samples(nb201_features)
    registry = Registry(tmp_path)
    for method in METHODS:
        trained = train_predictor(samples, "latency_ms", method=method, calibrate=True)
        version = registry.save(trained, platform_id="dev", training_fingerprint="x")
        loaded = registry.load("dev", "latency_ms", version).predictor
        assert loaded.method == method
        assert (loaded.booster is None) == (method in ("additive", "flops_linear"))
        np.testing.assert_allclose(loaded.predict(samples[:5]), trained.predict(samples[:5]), rtol=1e-9)
        assert trained.cv and 0.0 <= trained.cv["acc_10"] <= 1.0


def test_a_baseline_that_wins_serves_and_says_so():
    """On a device that is exactly 'overhead + throughput x MACs', FLOPs-linear is exact and serves."""
    rng = np.random.default_rng(3)
    samples = []
    for i in range(80):
        macs = float(10 ** rng.uniform(6, 9))
        features = {"macs": macs, "node_count": float(rng.integers(5, 200)),
                    "count:conv2d": float(rng.integers(1, 50)), "macs:conv2d": macs * rng.uniform(0.5, 1.0),
                    "param_bytes": float(rng.uniform(1e4, 1e7)), "act_read_bytes": float(rng.uniform(1e4, 1e7))}
        samples.append(Sample(model_sha256=f"{i:064x}", family=f"f{i % 4}", platform_id="p",
                              values={"latency_ms": 0.4 + 2e-8 * macs}, features=features))
    result = run_train_task(TrainTask("p", "latency_ms", tuple(samples), 0, leave_family_out=False))
    assert result.method == "flops_linear" and result.predictor.method == "flops_linear"
    assert result.chosen_because.startswith("baseline flops_linear had the best")
    assert any("a baseline (flops_linear) serves" in w for w in result.metrics["warnings"])
    for method in ("predictor", "additive", "additive_lgbm", "opcount_lgbm", "flops_linear"):
        assert method in result.metrics["cross_validation"] and method in result.metrics["random_split"]


def test_choice_goes_by_cross_validation_then_kernel_level_on_the_same_held_out_models():
    cv = {"predictor": {"acc_10": 0.80, "mape": 0.06, "n": 100, "folds": "family"},
          "additive": {"acc_10": 0.85, "mape": 0.05, "n": 100, "folds": "family"},
          "opcount_lgbm": {"acc_10": 0.85, "mape": 0.07, "n": 100}}
    rnd = {"n_test": 20, "additive": {"acc_10": 0.7, "mape": 0.08}}
    key, because = _choose(cv, rnd, "no profiles")
    assert key == "additive" and "5-fold cross-validation (family folds, 100 models)" in because
    assert "opcount_lgbm 0.850/0.070" in because and because.endswith("(no profiles)")
    rnd["kernel"] = {"acc_10": 0.9, "mape": 0.04}
    assert _choose(cv, rnd, "")[0] == "kernel"
    rnd["kernel"] = {"acc_10": 0.6, "mape": 0.04}
    assert _choose(cv, rnd, "")[0] == "additive"


def test_standing_warnings_name_small_test_sets_bad_coverage_and_the_noise_ceiling():
    metrics = {"served": {"method": "lgbm",
                          "random_split": {"n": 12, "acc_10": 0.5, "interval_coverage": 0.6, "interval_level": 0.9},
                          "leave_family_out": {"n": 40, "acc_10": 0.3, "interval_coverage": 0.86,
                                               "interval_level": 0.9}},
               "noise_ceiling": {"share_within_10": 0.52}}
    warnings = standing_warnings(metrics)
    assert any("only 12 held-out models" in w and "±0.28" in w for w in warnings)
    assert any("covered 60% of held-out models" in w and "too narrow" in w for w in warnings)
    assert not any("leave-one-family-out" in w for w in warnings)  # 86 % is within 10 points of 90 %
    assert any("bounded by the platform's noise" in w for w in warnings)
    metrics["served"]["random_split"] = {"n": 300, "acc_10": 0.3, "interval_coverage": 0.9, "interval_level": 0.9}
    assert standing_warnings(metrics) == []


def test_predictions_carry_the_method_and_the_standing_warnings(nb201_features, tmp_path):
    samples = _samples(dict(list(nb201_features.items())[:30]))
    result = run_train_task(TrainTask("dev", "latency_ms", tuple(samples), 0, leave_family_out=False))
    registry = Registry(tmp_path)
    registry.save_result(result)
    features = extract_features(onnx_bytes(build_onnx(build_nasbench201(
        "x", {"arch": arch_from_index(9), "channels": 4, "cells_per_stage": 1}))))
    (record,) = PredictorPool(registry).predict(features, ["dev"])
    assert record["method"] == result.method
    assert any("only 6 held-out models" in w for w in record["warnings"])  # 30 samples: a 6-model test split
    assert math.isfinite(record["value"]) and record["value"] > 0
