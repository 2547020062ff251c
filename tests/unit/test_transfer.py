"""Transfer to a new platform (fleetmeter.modeler.transfer): maps recovered from few samples, the choice of
what to measure, and the registry round trip of a transferred predictor.

The data: a synthetic family of devices over ~70 zoo networks (features from their graphs). Each source
device is a roofline (per-kernel ``max(macs / peak, bytes / bandwidth)`` plus a launch cost) with its own
peak and bandwidth; a new device is a *known* map of them: a power law of one source (linear in log
space), or a device that pays two sources' costs one after the other (``A + B``: non-linear in log
space, and no single source ranks it). Source predictors are the additive model trained on 70 networks
of each source, as ``fleetmeter train`` would serve them.
"""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("onnx")

from fleetmeter.errors import FailedPrecondition  # noqa: E402
from fleetmeter.modeler.dataset import Sample  # noqa: E402
from fleetmeter.modeler.features import extract_features  # noqa: E402
from fleetmeter.modeler.methods import train_predictor  # noqa: E402
from fleetmeter.modeler.metrics import acc_within, spearman  # noqa: E402
from fleetmeter.modeler.registry import Registry  # noqa: E402
from fleetmeter.modeler.transfer import (fit_loglinear, fit_stacked, fit_transfer, select_models,  # noqa: E402
                                         source_log_matrix, train_transfer)
from fleetmeter.modeler.zoo.families import derive_seed, family_names  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402

from _support import small_zoo_sample  # noqa: E402  (tests/ is on sys.path)

PER_FAMILY = 6
#: (MACs per ms, bytes per ms, launch ms) of each source device.
DEVICES = {"src-compute": (2.0e6, 4.0e7, 0.002), "src-memory": (4.0e7, 1.5e6, 0.004),
           "src-balanced": (8.0e6, 8.0e6, 0.010)}


def _roofline_ms(features, peak: float, bandwidth: float, launch: float) -> float:
    total = 0.01
    for node in features.kernels:
        moved = node.param_bytes + node.act_read_bytes + node.act_write_bytes
        total += max(node.macs / peak, moved / bandwidth) + launch
    return total


@pytest.fixture(scope="module")
def zoo():
    out = []
    for family in family_names():
        for index in range(PER_FAMILY):
            data = onnx_bytes(build_onnx(small_zoo_sample(family, derive_seed(23, family, index)), seed=index))
            out.append((family, hashlib.sha256(data).hexdigest(), extract_features(data)))
    return out


@pytest.fixture(scope="module")
def truth(zoo):
    """``{device: np.array of true latency per zoo model}`` for the sources and the known maps of them."""
    t = {name: np.array([_roofline_ms(f, *consts) for _, _, f in zoo]) for name, consts in DEVICES.items()}
    t["new-power"] = 1.7 * t["src-compute"] ** 0.93
    t["new-serial"] = t["src-compute"] + t["src-memory"]
    # no roofline: a cost in the weights' bytes alone, which no source's cost follows
    t["new-weights"] = np.array([3e-7 * f.model["param_bytes"] + 0.2 for _, _, f in zoo])
    return t


@pytest.fixture(scope="module")
def sources(zoo, truth):
    return [(name, train_predictor(_target(zoo, truth, name), "latency_ms", method="additive", calibrate=False))
            for name in DEVICES]


def _target(zoo, truth, name: str) -> list:
    values = truth[name]
    return [Sample(sha, family, name, {"latency_ms": float(v)}, dict(f.model))
            for (family, sha, f), v in zip(zoo, values)]


def _budget_split(samples, sources, budget: int, seed: int = 0):
    logs = source_log_matrix(sources, samples)
    picked = select_models(logs, [s.model_sha256 for s in samples], budget, seed=seed)
    rest = [s for i, s in enumerate(samples) if i not in set(picked)]
    return [samples[i] for i in picked], rest


def _scored(result, test) -> tuple:
    pred = result.predictor.predict(test)
    true = np.array([s.values["latency_ms"] for s in test])
    return acc_within(pred, true, 0.10), spearman(pred, true)


# ------------------------------------------------------------------ maps recovered


def test_a_power_law_of_one_source_is_recovered_exactly_by_the_loglinear_map():
    rng = np.random.default_rng(1)
    logs = rng.normal(size=(8, 3))
    y_log = 0.93 * logs[:, 1] + math.log(1.7)
    fitted = fit_loglinear(logs, y_log)
    assert fitted.anchor == 1
    assert fitted.coef[1] == pytest.approx(0.93) and fitted.intercept == pytest.approx(math.log(1.7))
    new = rng.normal(size=(20, 3))
    assert np.allclose(fitted.apply(new), 0.93 * new[:, 1] + math.log(1.7))


def test_the_stacked_map_recovers_a_mix_of_sources_that_no_single_source_explains():
    rng = np.random.default_rng(2)
    logs = rng.normal(size=(12, 4))
    y_log = 0.5 * logs[:, 0] + 0.5 * logs[:, 2] + 0.3
    test = rng.normal(size=(200, 4))
    want = 0.5 * test[:, 0] + 0.5 * test[:, 2] + 0.3
    stacked = fit_stacked(logs, y_log)
    single = fit_loglinear(logs, y_log)
    assert np.max(np.abs(stacked.apply(test) - want)) < 0.05
    assert np.max(np.abs(single.apply(test) - want)) > 0.3  # one source alone cannot
    _, cv, because, _ = fit_transfer(logs, y_log)
    assert cv["stacked"]["acc_10"] > cv["loglinear"]["acc_10"] and because.startswith("transfer map stacked")


@pytest.mark.parametrize("name, budget, min_acc", [("new-power", 8, 0.9), ("new-serial", 12, 0.8)])
def test_transfer_on_a_synthetic_device_family_from_few_samples(zoo, truth, sources, name, budget, min_acc):
    samples = _target(zoo, truth, name)
    measured, rest = _budget_split(samples, sources, budget)
    result = train_transfer(measured, sources, "latency_ms", platform_id=name)
    acc, rho = _scored(result, rest)
    scratch = train_predictor(measured, "latency_ms", method="additive", calibrate=False)
    true = np.array([s.values["latency_ms"] for s in rest])
    scratch_acc = acc_within(scratch.predict(rest), true, 0.10)
    assert acc >= min_acc and rho >= 0.95, (acc, rho)
    assert acc > scratch_acc, (acc, scratch_acc)  # the sources are what makes a few samples enough
    assert result.metrics["served"]["from_platforms"] == sorted(DEVICES)
    assert result.n_samples == budget and result.metrics["cross_validation"]


def test_the_platforms_own_additive_model_serves_when_it_beats_every_map(zoo, truth, sources):
    """A device whose cost follows its weights' bytes alone is no smooth map of the rooflines: leave-one-out on
    the budget says the additive model on the measured models alone does better, and that serves, saying so."""
    measured, rest = _budget_split(_target(zoo, truth, "new-weights"), sources, 12)
    result = train_transfer(measured, sources, "latency_ms", platform_id="new-weights")
    assert (result.granularity, result.method, result.predictor.method) == ("model", "additive", "additive")
    assert result.chosen_because.startswith("the additive model on the 12 measured models alone beat")
    assert _scored(result, rest)[0] > 0.95
    maps = train_transfer(measured, sources, "latency_ms", platform_id="new-weights", own=False)
    assert maps.granularity == "transferred" and _scored(maps, rest)[0] < _scored(result, rest)[0]


def test_too_few_samples_or_no_sources_are_clear_errors(zoo, truth, sources):
    samples = _target(zoo, truth, "new-power")
    with pytest.raises(ValueError, match="at least 3 measured models"):
        train_transfer(samples[:2], sources, "latency_ms", platform_id="x")
    with pytest.raises(ValueError, match="at least one source"):
        train_transfer(samples[:5], [], "latency_ms", platform_id="x")


# ------------------------------------------------------------------ what to measure


def test_selection_is_deterministic_for_a_seed_and_ignores_the_candidates_order(zoo, truth, sources):
    samples = _target(zoo, truth, "new-serial")
    logs = source_log_matrix(sources, samples)
    keys = [s.model_sha256 for s in samples]
    first = [keys[i] for i in select_models(logs, keys, 10, seed=3)]
    again = [keys[i] for i in select_models(logs, keys, 10, seed=3)]
    perm = np.random.default_rng(0).permutation(len(keys))
    shuffled = [keys[perm[i]] for i in select_models(logs[perm], [keys[i] for i in perm], 10, seed=3)]
    assert first == again == shuffled and len(set(first)) == 10
    assert [keys[i] for i in select_models(logs, keys, 10, seed=4)] != first  # the seed matters
    mean_cost = logs.mean(axis=1)
    order = [mean_cost[keys.index(k)] for k in first]
    assert order == sorted(order)  # cheapest first


def test_spread_selection_covers_the_range_better_than_random(zoo, truth, sources):
    samples = _target(zoo, truth, "new-serial")
    logs = source_log_matrix(sources, samples)
    keys = [s.model_sha256 for s in samples]
    span = float(np.ptp(logs.mean(axis=1)))
    chosen = [float(np.ptp(logs[select_models(logs, keys, 8, seed=s)].mean(axis=1))) for s in range(10)]
    rng = np.random.default_rng(5)
    random_ = [float(np.ptp(logs[rng.choice(len(keys), 8, replace=False)].mean(axis=1))) for _ in range(10)]
    assert min(chosen) > 0.8 * span and np.mean(chosen) > np.mean(random_)


# ------------------------------------------------------------------ registry


def test_registry_round_trip_of_a_transferred_predictor(tmp_path, zoo, truth, sources):
    samples = _target(zoo, truth, "new-power")
    # one source with a booster (its LightGBM text travels with the transferred version), two without
    boosted = train_predictor(_target(zoo, truth, "src-compute"), "latency_ms", method="additive_lgbm",
                              calibrate=False, rounds=40)
    sources = [(pid, boosted if pid == "src-compute" else p) for pid, p in sources]
    measured, rest = _budget_split(samples, sources, 8)
    result = train_transfer(measured, sources, "latency_ms", platform_id="new-power")
    reg = Registry(tmp_path)
    version = reg.save_result(result)
    loaded = reg.load("new-power", "latency_ms")
    manifest = loaded.manifest
    assert (version, manifest["granularity"], manifest["method"]) == (1, "transferred", "transfer")
    assert manifest["transfer"]["from_platforms"] == sorted(DEVICES)
    assert "sources: src-balanced, src-compute, src-memory" in manifest["chosen_because"]
    assert np.allclose(loaded.predictor.predict(rest), result.predictor.predict(rest), rtol=1e-9)
    assert loaded.predictor.interval_log == pytest.approx(result.predictor.interval_log)
    # a damaged source file is refused, naming the file
    files = manifest["transfer"]["source_files"]
    assert [bool(f["file"]) for f in files] == [False, True, False]  # sorted: balanced, compute, memory
    listed = files[1]["file"]
    path = reg.version_dir("new-power", "latency_ms", version) / listed
    path.write_text(path.read_text() + "\n", encoding="utf-8")
    with pytest.raises(FailedPrecondition, match="does not match its manifest"):
        reg.load("new-power", "latency_ms")
    assert json.loads((path.parent.parent / "manifest.json").read_text())["predictor"]["prior"]["kind"] == "transfer"


# ------------------------------------------------------------------ --models


def test_models_are_named_by_sha256_prefix_name_or_pattern():
    from fleetmeter.controller.adapt import match_models
    from fleetmeter.errors import InvalidArgument, NotFound

    models = [{"sha256": "ab" * 32, "name": "mobilenet-a"}, {"sha256": "ac" * 32, "name": "mobilenet-b"},
              {"sha256": "cd" * 32, "name": "resnet-a"}]
    assert match_models([], models) == models
    assert [m["name"] for m in match_models(["mobilenet*"], models)] == ["mobilenet-a", "mobilenet-b"]
    assert [m["name"] for m in match_models(["resnet-a", "ababab"], models)] == ["mobilenet-a", "resnet-a"]
    assert match_models(["CD" * 32], models) == [models[2]]
    with pytest.raises(NotFound, match="no stored model matches 'vgg\\*'"):
        match_models(["vgg*"], models)
    with pytest.raises(InvalidArgument, match="ambiguous"):
        match_models(["a" * 6], [{"sha256": "a" * 64, "name": "x"}, {"sha256": "a" * 63 + "b", "name": "y"}])
