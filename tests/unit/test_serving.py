"""PredictorPool (fleetmeter.modeler.serving): which predictor serves, what a record holds, which errors.

Predictors here are real LightGBM predictors saved in a real registry, trained on small synthetic
feature dicts (the logic under test is the serving, not the learning).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound  # noqa: E402
from fleetmeter.modeler.dataset import Sample  # noqa: E402
from fleetmeter.modeler.features import ModelFeatures  # noqa: E402
from fleetmeter.modeler.registry import Registry  # noqa: E402
from fleetmeter.modeler.serving import TARGET_UNITS, PredictorPool, resolve_platform  # noqa: E402
from fleetmeter.modeler.methods import train_predictor  # noqa: E402

from _support import FakeClock  # noqa: E402  (tests/ is on sys.path)

CPU = "lab-x86/onnxruntime/t1"
PHONE = "pixel-8/litert/t4"


def _features(i: int, extra_op: str = "") -> dict:
    macs = 1e6 * (1 + i)
    out = {"macs": macs, "param_bytes": 4e3 * (1 + i % 7), "node_count": 10 + i % 5,
           "count:conv2d": 3 + i % 4, "count:relu": 2 + i % 3}
    if extra_op:
        out[f"count:{extra_op}"] = 1
    return out


def _samples(platform: str, scale: float, n: int = 30):
    return [Sample(model_sha256=f"{i:064x}", family=f"f{i % 3}", platform_id=platform,
                   values={"latency_ms": scale * (0.05 + _features(i)["macs"] / 1e7)}, features=_features(i))
            for i in range(n)]


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "predictors")
    for platform, scale in ((CPU, 1.0), (PHONE, 3.0)):
        reg.save(train_predictor(_samples(platform, scale), "latency_ms", calibrate=True, rounds=30),
                 platform_id=platform, training_fingerprint="t")
    return reg


def _model(i: int = 4, extra_op: str = "") -> ModelFeatures:
    return ModelFeatures(nodes=[], model=_features(i, extra_op), format="onnx", source="m.onnx")


def test_records_follow_the_contract_for_every_platform(registry):
    records = PredictorPool(registry).predict(_model())
    assert [r["platform"] for r in records] == sorted([CPU, PHONE])
    for r in records:
        assert {"platform", "target", "value", "lower", "upper", "unit", "predictor_version"} <= set(r)
        assert (r["target"], r["unit"], r["predictor_version"], r["warnings"]) == ("latency_ms", "ms", 1, [])
        assert 0 < r["lower"] <= r["value"] <= r["upper"]
    cpu, phone = (r["value"] for r in records)
    assert phone > 2 * cpu  # each platform answered by its own predictor


def test_no_predictor_at_all_says_to_train(tmp_path):
    with pytest.raises(FailedPrecondition, match="fleetmeter train"):
        PredictorPool(Registry(tmp_path / "empty")).predict(_model())


def test_unknown_platform_lists_the_known_ones(registry):
    pool = PredictorPool(registry)
    with pytest.raises(NotFound, match=r"unknown platform 'jetson'.*lab-x86.*pixel-8.*rpi"):
        pool.predict(_model(), ["jetson"], known=lambda: ["rpi-5/litert/t4"])


def test_known_platform_without_predictor_says_to_measure_and_train(registry):
    pool = PredictorPool(registry)
    with pytest.raises(FailedPrecondition, match="no latency_ms predictor for platform 'rpi-5/litert/t4'"):
        pool.predict(_model(), ["rpi-5"], known=lambda: ["rpi-5/litert/t4"])
    with pytest.raises(FailedPrecondition, match="no energy_mj predictor"):
        pool.predict(_model(), [CPU], ["energy_mj"])
    with pytest.raises(InvalidArgument, match="unknown target 'speed'"):
        pool.predict(_model(), [CPU], ["speed"])
    # Asked of every platform, a target that none can answer is named, not silently left out.
    with pytest.raises(FailedPrecondition, match="no peak_rss_bytes predictor on any platform"):
        pool.predict(_model(), None, ["latency_ms", "peak_rss_bytes"])


def test_platform_prefixes_resolve_when_unique():
    assert resolve_platform("lab", [CPU, PHONE]) == CPU
    assert resolve_platform(CPU, [CPU, CPU + "x"]) == CPU  # an exact id wins over longer ones
    assert resolve_platform("zzz", [CPU]) is None
    with pytest.raises(InvalidArgument, match="ambiguous"):
        resolve_platform("p", ["pixel-8/a", "pixel-7/b"])


def test_an_operator_never_seen_is_a_warning_not_a_silent_zero(registry):
    (record,) = PredictorPool(registry).predict(_model(extra_op="softmax"), [CPU])
    assert record["value"] > 0
    assert record["warnings"] and "softmax" in record["warnings"][0]


def test_a_new_version_serves_after_refresh_and_a_pin_wins(registry):
    clock = FakeClock(start_s=0.0)
    pool = PredictorPool(registry, refresh_s=5.0, clock=clock)
    assert pool.predict(_model(), [CPU])[0]["predictor_version"] == 1
    registry.save(train_predictor(_samples(CPU, 2.0), "latency_ms", calibrate=False, rounds=30),
                  platform_id=CPU, training_fingerprint="t2")
    assert pool.predict(_model(), [CPU])[0]["predictor_version"] == 1  # index cached for refresh_s
    clock.advance(5.0)
    (v2,) = pool.predict(_model(), [CPU])
    assert v2["predictor_version"] == 2 and v2["lower"] is None  # v2 was saved without an interval
    registry.pin(CPU, "latency_ms", 1)
    pool.invalidate()
    assert pool.predict(_model(), [CPU])[0]["predictor_version"] == 1


def test_batched_predictions_equal_single_ones(registry):
    pool = PredictorPool(registry)
    models = [_model(i) for i in range(50)]
    values, low, high = pool.predict_many([m.model for m in models], PHONE)
    single = [pool.predict(m, [PHONE])[0]["value"] for m in models[:5]]
    np.testing.assert_allclose(values[:5], single, rtol=1e-12)
    assert np.all(low < values) and np.all(values < high)


def test_describe_carries_metrics_and_interval(registry):
    (entry,) = PredictorPool(registry).describe([CPU])
    assert (entry["platform"], entry["version"], entry["versions"], entry["pinned"]) == (CPU, 1, [1], 0)
    assert entry["unit"] == "ms" and entry["granularity"] == "model"
    assert math.isfinite(entry["created_unix"])


def test_the_cli_knows_the_modeler_targets():
    """`fleetmeter predict/train/eval --target` offer exactly the targets the modeler trains."""
    from fleetmeter.modeler.dataset import TARGETS
    from fleetmeter.predict_cli import TARGETS as CLI_TARGETS

    assert CLI_TARGETS == TARGETS and set(CLI_TARGETS) == set(TARGET_UNITS)
