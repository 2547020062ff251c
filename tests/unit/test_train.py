"""Model-level training, evaluation, the registry and data loading (fleetmeter.modeler.{dataset,train,registry}).

The data is synthetic but realistic: about 150 small networks from the zoo's
twelve families (built once per module, features extracted from the graph),
with a made-up device whose latency is a known *nonlinear* function of each
kernel's MACs and bytes (a roofline: compute- or memory-bound, with a
per-op-type throughput, an efficiency that drops for narrow convolutions, a
cache cliff and a per-kernel launch cost), measured three times with 2 %
noise. FLOPs alone cannot explain such a device; the graph features can.

Each test says what would be wrong if it failed.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import math
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("onnx")

from fleetmeter.blobs import BlobStore  # noqa: E402
from fleetmeter.controller.store import Store  # noqa: E402
from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound  # noqa: E402
from fleetmeter.modeler import dataset  # noqa: E402
from fleetmeter.modeler.dataset import CsvImportError, FeatureCache, Sample, fingerprint, load_csv  # noqa: E402
from fleetmeter.modeler.evaluation import evaluate_leave_family_out, evaluate_split  # noqa: E402
from fleetmeter.modeler.features import FEATURE_SCHEMA_VERSION, extract_features  # noqa: E402
from fleetmeter.modeler.learners import split_leave_family_out, split_random  # noqa: E402
from fleetmeter.modeler.methods import FlopsLinear, train_predictor  # noqa: E402
from fleetmeter.modeler.registry import Registry, platform_dir_name  # noqa: E402
from fleetmeter.modeler.train import train_all  # noqa: E402
from fleetmeter.modeler.zoo.families import SMALL_FIXED, derive_seed, family_names, get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402

PER_FAMILY = 12
INPUT_SIZES = (32, 48, 64)
PLATFORM = "synthetic-cpu/onnxruntime-1.17/default/t1"  # a real-looking id, with slashes
NOISE_SIGMA = 0.02

# The made-up device: MACs per ms by op type (others: 2e6), bytes per ms.
_PEAK_MACS_PER_MS = {"conv2d": 1.0e7, "depthwise_conv2d": 1.2e6, "dense": 4.0e6, "matmul": 3.0e6}
_CACHE_BYTES = 512 * 1024


def _kernel_ms(node) -> float:
    peak = _PEAK_MACS_PER_MS.get(node.op_type, 2.0e6)
    if node.op_type == "conv2d":  # narrow convolutions cannot fill the vector units
        peak *= min(1.0, math.sqrt(max(node.out_channels, 1) / 64.0))
    moved = node.param_bytes + node.act_read_bytes + node.act_write_bytes
    bandwidth = 8.0e6 if moved < _CACHE_BYTES else 3.0e6  # bytes per ms: fast while it fits in cache
    return max(node.macs / peak, moved / bandwidth) + 0.004  # plus a 4 us launch cost


def synthetic_latency_ms(features) -> float:
    return 0.02 + sum(_kernel_ms(n) for n in features.kernels)


def synthetic_peak_rss_bytes(model: dict) -> float:
    return 40e6 + 1.2 * model["param_bytes"] + 3.0 * model["largest_activation_bytes"]


def _arch(family: str, index: int):
    fixed = dict(SMALL_FIXED[family])
    for key in ("input_size", "base_resolution"):
        if key in fixed:
            fixed[key] = INPUT_SIZES[index % len(INPUT_SIZES)]
    return get_family(family).sample(derive_seed(11, family, index), name=f"{family}-{index:02d}", **fixed)


def _noisy(value: float, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> tuple:
    return tuple(float(value * math.exp(rng.normal(0.0, sigma))) for _ in range(3))


def _sample(sha: str, family: str, platform: str, features: dict, repeats: dict) -> Sample:
    values = {t: float(np.median(v)) for t, v in repeats.items()}
    return Sample(model_sha256=sha, family=family, platform_id=platform, values=values, features=features,
                  repeats=repeats)


@pytest.fixture(scope="module")
def zoo():
    """``[(family, sha256, ModelFeatures, onnx bytes or None)]``: bytes kept for the first two models only."""
    out = []
    for family in family_names():
        for index in range(PER_FAMILY):
            data = onnx_bytes(build_onnx(_arch(family, index), seed=index))
            keep = data if len(out) < 2 else None
            out.append((family, hashlib.sha256(data).hexdigest(), extract_features(data), keep))
    return out


@pytest.fixture(scope="module")
def samples(zoo):
    rng = np.random.default_rng(0)
    out = []
    for family, sha, feats, _ in zoo:
        repeats = {"latency_ms": _noisy(synthetic_latency_ms(feats), rng),
                   "peak_rss_bytes": _noisy(synthetic_peak_rss_bytes(feats.model), rng, 0.005)}
        out.append(_sample(sha, family, PLATFORM, dict(feats.model), repeats))
    return out


@pytest.fixture(scope="module")
def split(samples):
    return split_random(samples, seed=0)


@pytest.fixture(scope="module")
def report(split):
    train_set, test_set = split
    return evaluate_split(train_set, test_set, "latency_ms", seed=0)


@pytest.fixture(scope="module")
def predictor(split):
    return train_predictor(split[0], "latency_ms", seed=0)


# ------------------------------------------------------------ accuracy


def test_zoo_is_varied_enough_to_mean_something(samples):
    """Fails if the synthetic set collapsed (duplicate models, a narrow range): the other tests would prove nothing."""
    assert len({s.model_sha256 for s in samples}) == len(samples) >= 140
    latencies = [s.values["latency_ms"] for s in samples]
    assert max(latencies) / min(latencies) > 20


def test_predictor_beats_flops_only_baseline(report, samples):
    """Fails if the LightGBM predictor is no better than FLOPs on a device where FLOPs are not the whole story."""
    pred, flops, opcount = report["predictor"], report["flops_linear"], report["opcount_lgbm"]
    print("\nrandom 80/20 split, latency_ms:", json.dumps(
        {k: {m: round(v[m], 3) for m in ("acc_5", "acc_10", "mape", "rmspe", "spearman")}
         for k, v in (("predictor", pred), ("flops_linear", flops), ("opcount_lgbm", opcount))}))
    assert report["n_test"] == pred["n"] == flops["n"] == opcount["n"] == round(0.2 * len(samples))
    assert pred["acc_10"] >= flops["acc_10"] + 0.25
    assert pred["acc_10"] >= opcount["acc_10"] + 0.25
    assert pred["mape"] < 0.6 * flops["mape"]
    assert pred["spearman"] > 0.95


def test_interval_coverage_is_measured_on_held_out_models(report):
    """Fails if the interval is missing, degenerate, or far below its nominal 90 % on models never seen."""
    pred = report["predictor"]
    assert pred["interval_level"] == 0.9
    assert 0.0 < pred["interval_log"] < 1.0  # a factor between 1 and e either side
    assert pred["interval_coverage"] >= 0.7


def test_predict_interval_brackets_the_prediction(predictor, split):
    """Fails if low/high are not the prediction scaled by exp(-q)/exp(q), or predictions are not positive."""
    pred, low, high = predictor.predict_interval(split[1])
    assert np.all(pred > 0)
    np.testing.assert_allclose(low, pred / math.exp(predictor.interval_log))
    np.testing.assert_allclose(high, pred * math.exp(predictor.interval_log))


def test_flops_linear_recovers_an_exact_linear_law(samples):
    """Fails if the baseline is not a least-squares fit of target = a * macs + b."""
    exact = [replace(s, values={"latency_ms": 0.5 + 2e-6 * s.features["macs"]}) for s in samples[:30]]
    model = FlopsLinear.fit(exact, "latency_ms")
    assert model.slope == pytest.approx(2e-6, rel=1e-6)
    assert model.intercept == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(model.predict(exact), [s.values["latency_ms"] for s in exact], rtol=1e-6)


def test_training_is_deterministic(split):
    """Fails if the same data and seed give a different model (nondeterministic threads or random streams)."""
    small = split[0][:40]
    a = train_predictor(small, "latency_ms", seed=5, calibrate=False)
    b = train_predictor(list(reversed(small)), "latency_ms", seed=5, calibrate=False)
    np.testing.assert_array_equal(a.predict(small), b.predict(small))
    assert a.params["num_threads"] == 1 and a.params["deterministic"] is True


def test_opcount_feature_set_sees_only_op_counts(split):
    """Fails if the op-count baseline can see MACs or bytes (directly or through the prior)."""
    model = train_predictor(split[0][:40], "latency_ms", feature_set="opcount", calibrate=False)
    assert model.prior is None
    assert model.columns and all(c.startswith("count:") or c == "node_count" for c in model.columns)


# --------------------------------------------------------------- splits


def test_random_split_is_exact_seeded_and_order_independent(samples):
    """Fails if the split size is off, depends on the input order, or ignores the seed."""
    train_set, test_set = split_random(samples, seed=1)
    assert len(test_set) == round(0.2 * len(samples)) and len(train_set) + len(test_set) == len(samples)
    assert not {s.model_sha256 for s in train_set} & {s.model_sha256 for s in test_set}
    _, test_again = split_random(list(reversed(samples)), seed=1)
    assert {s.model_sha256 for s in test_again} == {s.model_sha256 for s in test_set}
    _, other = split_random(samples, seed=2)
    assert {s.model_sha256 for s in other} != {s.model_sha256 for s in test_set}


def test_leave_family_out_yields_one_fold_per_family(samples):
    """Fails if a family is skipped, repeated, leaks into its own training set, or unlabelled models are held out."""
    unlabelled = replace(samples[0], model_sha256="f" * 64, family="")
    folds = list(split_leave_family_out(samples + [unlabelled]))
    assert [f for f, _, _ in folds] == sorted(family_names())
    for family, train_set, test_set in folds:
        assert len(test_set) == PER_FAMILY and {s.family for s in test_set} == {family}
        assert family not in {s.family for s in train_set}
        assert unlabelled in train_set
        assert len(train_set) + len(test_set) == len(samples) + 1


def test_leave_family_out_evaluation_pools_every_held_out_model(samples):
    """Fails if per-family reports are missing or the pooled metrics do not cover each held-out model once."""
    few = [s for s in samples if s.family in ("mobilenetv1", "resnet", "vgg")]
    out = evaluate_leave_family_out(few, "latency_ms")
    assert sorted(out["folds"]) == ["mobilenetv1", "resnet", "vgg"]
    assert out["pooled"]["n_test"] == out["pooled"]["predictor"]["n"] == len(few)
    assert set(out["pooled"]) >= {"predictor", "flops_linear", "opcount_lgbm"}


# -------------------------------------------------------------- fan-out


def _ray_like_map(calls):
    """Like a Ray-backed map_fn: every task and result crosses a pickle boundary."""

    def run(fn, items):
        calls.append(len(items))
        return [pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(item))))) for item in items]

    return run


def test_train_all_trains_one_predictor_per_platform_and_target(samples):
    """Fails if a (platform, target) is lost, trained on unmeasured targets, or results cannot cross a Ray boundary."""
    rng = np.random.default_rng(1)
    fast = samples[::6][:24]  # 24 models across families
    with_energy = [replace(s, values={**s.values, "energy_mj": 3.0 * s.values["latency_ms"]},
                           repeats={**s.repeats, "energy_mj": _noisy(3.0 * s.values["latency_ms"], rng)})
                   for s in fast]
    other = [replace(s, platform_id="phone/tflite/xnnpack/t4") for s in fast[:8]]  # too few to train
    calls, progress = [], []
    results = train_all({PLATFORM: with_energy, "phone/tflite/xnnpack/t4": other},
                        targets=("latency_ms", "energy_mj"), map_fn=_ray_like_map(calls),
                        leave_family_out=False, progress=lambda done, total: progress.append((done, total)))
    assert [(r.platform_id, r.target) for r in results] == [
        ("phone/tflite/xnnpack/t4", "latency_ms"), ("phone/tflite/xnnpack/t4", "energy_mj"),
        (PLATFORM, "latency_ms"), (PLATFORM, "energy_mj")]
    assert [bool(r.skipped) for r in results] == [True, True, False, False]
    assert "8 samples" in results[0].skipped and results[0].predictor is None
    assert calls == [2] and progress == [(0, 2), (2, 2)]
    for result in results[2:]:
        assert result.n_samples == 24 and result.fingerprint == fingerprint(with_energy)
        assert set(result.metrics) >= {"noise_ceiling", "random_split", "interval", "served", "warnings",
                                       "cross_validation"}
        assert result.metrics["noise_ceiling"]["n_models"] == 24
        assert result.metrics["interval"]["coverage_on_held_out"] is not None
        assert np.all(result.predictor.predict(fast) > 0)


# -------------------------------------------------------------- registry


def test_registry_round_trip_gives_the_same_predictions(tmp_path, predictor, split):
    """Fails if save/load changes a prediction, loses the prior or the interval, or writes a pickle."""
    reg = Registry(tmp_path / "predictors")
    version = reg.save(predictor, platform_id=PLATFORM, training_fingerprint=fingerprint(split[0]),
                       metrics={"random_split": {"predictor": {"acc_10": 0.7, "spearman": float("nan")}}})
    assert version == 1
    loaded = reg.load(PLATFORM, "latency_ms")
    np.testing.assert_array_equal(loaded.predictor.predict(split[1]), predictor.predict(split[1]))
    assert loaded.predictor.interval_log == predictor.interval_log
    assert loaded.predictor.prior == predictor.prior
    folder = reg.version_dir(PLATFORM, "latency_ms", 1)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.txt"]
    assert (folder / "model.txt").read_text().startswith("tree")  # LightGBM's own text format
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["platform_id"] == PLATFORM and manifest["target"] == "latency_ms"
    assert manifest["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    assert manifest["training_fingerprint"] == fingerprint(split[0])
    assert manifest["metrics"]["random_split"]["predictor"] == {"acc_10": 0.7, "spearman": None}
    assert set(manifest["library_versions"]) >= {"python", "numpy", "lightgbm"}
    assert manifest["predictor"]["columns"] == list(predictor.columns)


def test_registry_keeps_versions_and_pins(tmp_path, predictor):
    """Fails if a save overwrites an earlier version, latest is not the default, or a pin is ignored."""
    reg = Registry(tmp_path)
    assert [reg.save(predictor, platform_id=PLATFORM, training_fingerprint=f"fp{i}") for i in range(3)] == [1, 2, 3]
    assert reg.list_versions(PLATFORM, "latency_ms") == [1, 2, 3]
    assert reg.load(PLATFORM, "latency_ms").version == 3
    reg.pin(PLATFORM, "latency_ms", 1)
    assert reg.load(PLATFORM, "latency_ms").version == 1
    assert reg.load(PLATFORM, "latency_ms").manifest["training_fingerprint"] == "fp0"
    assert reg.load(PLATFORM, "latency_ms", version=2).version == 2
    assert reg.save(predictor, platform_id=PLATFORM, training_fingerprint="fp3") == 4
    assert reg.load(PLATFORM, "latency_ms").version == 1  # still pinned after a new version
    reg.unpin(PLATFORM, "latency_ms")
    assert reg.load(PLATFORM, "latency_ms").version == 4
    assert reg.list_predictors() == [{"platform_id": PLATFORM, "target": "latency_ms", "versions": [1, 2, 3, 4],
                                      "pinned": None}]
    with pytest.raises(NotFound):
        reg.load(PLATFORM, "latency_ms", version=9)
    with pytest.raises(NotFound):
        reg.pin(PLATFORM, "latency_ms", 9)
    with pytest.raises(NotFound):
        reg.load(PLATFORM, "energy_mj")
    with pytest.raises(InvalidArgument):
        reg.load(PLATFORM, "throughput")


def test_registry_refuses_a_predictor_of_another_feature_schema(tmp_path, predictor):
    """Fails if a predictor trained on other features loads silently (it would predict garbage)."""
    reg = Registry(tmp_path)
    reg.save(predictor, platform_id=PLATFORM, training_fingerprint="fp")
    path = reg.version_dir(PLATFORM, "latency_ms", 1) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["feature_schema_version"] = FEATURE_SCHEMA_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(FailedPrecondition, match=rf"feature schema {FEATURE_SCHEMA_VERSION + 1}.*retrain"):
        reg.load(PLATFORM, "latency_ms")


def test_registry_refuses_a_damaged_model_file(tmp_path, predictor):
    """Fails if a truncated or edited model.txt is served."""
    reg = Registry(tmp_path)
    reg.save(predictor, platform_id=PLATFORM, training_fingerprint="fp")
    model = reg.version_dir(PLATFORM, "latency_ms", 1) / "model.txt"
    model.write_text(model.read_text()[:-100])
    with pytest.raises(FailedPrecondition, match="does not match"):
        reg.load(PLATFORM, "latency_ms")


def test_platform_folders_are_safe_and_distinct():
    """Fails if a platform id escapes the registry folder or two ids share one."""
    assert platform_dir_name("cpu-4c_x86.64") == "cpu-4c_x86.64"
    names = {platform_dir_name(p) for p in ("a/b", "a_b", "a:b", "..", "../etc")}
    assert len(names) == 5
    assert all("/" not in n and n not in (".", "..") for n in names)


# -------------------------------------------------------------- CSV import


def _write_models(zoo, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.onnx").write_bytes(zoo[0][3])
    (folder / "b.onnx").write_bytes(zoo[1][3])
    from fleetmeter.modeler.zoo.tflite_emit import build_tflite

    (folder / "c.tflite").write_bytes(build_tflite(_arch("mobilenetv1", 0), seed=0))
    (folder / "a.pt").write_bytes(b"not ours")
    from fleetmeter.modeler.zoo.odd_files import write_corrupt_model

    write_corrupt_model(folder / "corrupt.onnx")
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("a.onnx", "b.onnx", "c.tflite")}


def test_csv_import_of_a_good_file(tmp_path, zoo):
    """Fails if rows are not grouped per (model, platform), repeats not reduced to their median, or paths misread."""
    shas = _write_models(zoo, tmp_path / "models")
    csv_path = tmp_path / "measured.csv"
    csv_path.write_text(
        "model,platform,latency_ms,energy_mj,peak_rss_bytes,family\n"
        "models/a.onnx,laptop,10.0,,,resnet\n"
        "models/a.onnx,laptop,14.0,,50000000,\n"
        "models/a.onnx,laptop,12.5,,,\n"
        "\n"
        f"{tmp_path / 'models' / 'b.onnx'},laptop,3.5,7.25,,\n"
        "models/c.tflite,pixel 7,8,,,mobilenetv1\n")
    samples = load_csv(csv_path, cache=FeatureCache())
    by_key = {(s.model_sha256, s.platform_id): s for s in samples}
    assert set(by_key) == {(shas["a.onnx"], "laptop"), (shas["b.onnx"], "laptop"), (shas["c.tflite"], "pixel 7")}
    a = by_key[(shas["a.onnx"], "laptop")]
    assert a.values == {"latency_ms": 12.5, "peak_rss_bytes": 50000000.0}
    assert a.repeats["latency_ms"] == (10.0, 14.0, 12.5) and a.family == "resnet"
    assert by_key[(shas["b.onnx"], "laptop")].values == {"latency_ms": 3.5, "energy_mj": 7.25}
    c = by_key[(shas["c.tflite"], "pixel 7")]
    assert c.family == "mobilenetv1" and c.features["macs"] > 0


def test_csv_import_reports_every_bad_row_and_loads_nothing(tmp_path, zoo):
    """Fails if a bad row is missed, reported with the wrong line, or the good rows are half-loaded."""
    _write_models(zoo, tmp_path / "models")
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(
        "model,platform,latency_ms,energy_mj\n"      # line 1
        "models/a.onnx,laptop,10.0,\n"               # line 2: fine
        "models/a.onnx,laptop,-3,\n"                 # line 3: non-positive latency
        "models/missing.onnx,laptop,4.0,\n"          # line 4: no such file
        "models/b.onnx,laptop,4.0,12x\n"             # line 5: unparsable number
        "models/b.onnx,laptop,4.5,\n"                # line 6: fine
        "models/a.pt,laptop,4.0,\n"                  # line 7: unknown extension
        "models/corrupt.onnx,laptop,4.0,\n"          # line 8: not a model
        "models/b.onnx,laptop,,\n")                  # line 9: latency missing
    with pytest.raises(CsvImportError) as info:
        load_csv(csv_path, cache=FeatureCache())
    err = info.value
    assert isinstance(err, InvalidArgument)
    assert [line for line, _ in err.problems] == [3, 4, 5, 7, 8, 9]
    reasons = dict(err.problems)
    assert "positive" in reasons[3]
    assert "not found" in reasons[4]
    assert "energy_mj is not a number" in reasons[5]
    assert "extension" in reasons[7]
    assert "corrupt" in reasons[8]
    assert "missing value for 'latency_ms'" in reasons[9]
    assert all(f"line {n}:" in str(err) for n in (3, 4, 5, 7, 8, 9)) and "nothing imported" in str(err)


def test_csv_header_problems_are_reported_as_line_1(tmp_path):
    """Fails if a misspelt or missing column is ignored instead of refused."""
    csv_path = tmp_path / "typo.csv"
    csv_path.write_text("model,platform,latncy_ms\nx.onnx,p,1\n")
    with pytest.raises(CsvImportError) as info:
        load_csv(csv_path)
    assert [line for line, _ in info.value.problems] == [1, 1]
    assert "latency_ms" in info.value.problems[0][1] and "latncy_ms" in info.value.problems[1][1]


# ---------------------------------------------------------------- store


def test_load_from_store_joins_successful_measurements_with_model_features(tmp_path, zoo):
    """Fails if failed runs, disturbed readings or the drift canary's reference readings count, repeats are
    not reduced to their median, or a missing model file breaks loading."""
    blobs = BlobStore(tmp_path / "blobs")
    store = Store(tmp_path / "fleetmeter.sqlite")
    try:
        shas = []
        for data in (zoo[0][3], zoo[1][3]):
            sha = hashlib.sha256(data).hexdigest()
            staged = tmp_path / "staged"
            staged.write_bytes(data)
            blobs.adopt(staged, sha)
            shas.append(sha)
        gone = "e" * 64  # measured, but its file is not in the blob store
        for sha, name, family in ((shas[0], "a", "resnet"), (shas[1], "b", ""), (gone, "gone", "vgg")):
            store.add_model({"sha256": sha, "name": name, "format": "onnx", "size_bytes": 1,
                             "info": {"family": family}})
        runs = [(shas[0], 10.0, None, 0, ""), (shas[0], 13.0, None, 64e6, ""), (shas[0], 11.0, None, 0, ""),
                (shas[0], 1000.0, None, 0, "oom"), (shas[1], 4.0, 0.5, 0, ""), (gone, 1.0, None, 0, ""),
                (shas[0], 500.0, None, 0, "", {"flags": ["disturbed"]}),
                (shas[1], 400.0, None, 0, "", {"job_kind": "reference"})]
        for i, (sha, median, energy, rss, failure, *extra) in enumerate(runs):
            store.record_measurement({
                "measurement_id": f"m{i}", "job_id": "", "agent_id": "agent-1", "platform_id": PLATFORM,
                "model_sha256": sha, "latency_ms": None if failure else {"median": median},
                "energy_mj_per_inference": energy, "peak_rss_bytes": rss, "failure_kind": failure,
                "samples_ms": [], **(extra[0] if extra else {})})
        samples = dataset.load_from_store(store, tmp_path / "blobs", cache=FeatureCache())
    finally:
        store.close()
    by_sha = {s.model_sha256: s for s in samples}
    assert set(by_sha) == set(shas)
    a = by_sha[shas[0]]
    assert a.values == {"latency_ms": 11.0, "peak_rss_bytes": 64e6} and a.family == "resnet" and a.model_name == "a"
    assert a.repeats["latency_ms"] == (10.0, 13.0, 11.0)
    assert by_sha[shas[1]].values == {"latency_ms": 4.0, "energy_mj": 0.5}
    assert a.features == dict(zoo[0][2].model)


def test_fingerprint_follows_the_data_not_its_order(samples):
    """Fails if reordering changes the fingerprint or a changed measurement does not."""
    assert fingerprint(samples) == fingerprint(list(reversed(samples)))
    changed = [replace(samples[0], values={"latency_ms": samples[0].values["latency_ms"] * 1.01})] + samples[1:]
    assert fingerprint(changed) != fingerprint(samples)


def test_public_names_are_listed():
    """Fails if a module's __all__ names something it does not define."""
    for name in ("dataset", "metrics", "learners", "methods", "predictor", "evaluation", "work_fallback", "train",
                 "registry"):
        module = importlib.import_module(f"fleetmeter.modeler.{name}")
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
