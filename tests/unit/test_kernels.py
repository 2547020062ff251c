"""Kernel-level predictors (fleetmeter.modeler.kernels): matching profiles to kernels, training, persistence.

The learning tests use constructed samples whose kernel times follow a known
formula (a per-type roofline plus a launch cost) and whose latency is their
sum plus a fixed overhead, measured with 1 % noise; the matching tests use
small hand-built graphs and profiles named the way onnxruntime names them.
Real onnxruntime profiles are in tests/integration/test_kernels_profiles.py.

Each test says what would be wrong if it failed.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from fleetmeter.blobs import BlobStore  # noqa: E402
from fleetmeter.controller.store import Store  # noqa: E402
from fleetmeter.errors import FailedPrecondition  # noqa: E402
from fleetmeter.modeler import kernels  # noqa: E402
from fleetmeter.modeler.features import ModelFeatures, NodeFeatures, fuse_activations  # noqa: E402
from fleetmeter.modeler.kernel_match import (  # noqa: E402
    KernelSample,
    kernel_sample_from_profile,
    kernel_work,
    load_kernel_samples,
    match_profile,
    merge_profiles,
)
from fleetmeter.modeler.kernels import (  # noqa: E402
    KernelPredictor,
    evaluate_kernel_leave_family_out,
    evaluate_kernel_split,
    train_kernel_predictor,
)
from fleetmeter.modeler.learners import split_random  # noqa: E402

OVERHEAD_MS = 1.0
_RATE = {"conv2d+relu": 4.0e7, "depthwise_conv2d+relu6": 8.0e6, "add": 2.0e7}  # work units per ms


def _kernel(kind: str, rng: np.random.Generator) -> dict:
    hw = float(rng.choice([7, 14, 28, 56]))
    c_in, c_out = float(rng.choice([16, 32, 64, 128])), float(rng.choice([16, 32, 64, 128]))
    k = 1.0 if kind == "add" else float(rng.choice([1, 3]))
    if kind == "depthwise_conv2d+relu6":
        c_out = c_in
    macs = hw * hw * c_out * k * k * (1 if kind != "conv2d+relu" else c_in) if kind != "add" else hw * hw * c_out
    f = dict.fromkeys(kernels.KERNEL_FEATURE_KEYS, 0.0)
    f.update(in_h=hw, in_w=hw, out_h=hw, out_w=hw, in_channels=c_in, out_channels=c_out, kernel_h=k, kernel_w=k,
             stride_h=1.0, stride_w=1.0, macs=macs, act_read_bytes=4 * hw * hw * c_in, act_write_bytes=4 * hw * hw * c_out,
             param_bytes=4 * c_out * c_in * k * k if kind == "conv2d+relu" else 4 * c_out * k * k)
    return f


def _time_ms(kind: str, f: dict) -> float:
    # narrow layers run below peak: a nonlinearity the per-type trees must learn
    efficiency = min(1.0, math.sqrt(f["out_channels"] / 64.0))
    return kernel_work(f) / (_RATE[kind] * efficiency) + 0.003


def _synthetic(n: int, seed: int = 0, families: int = 4) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        count = int(rng.integers(6, 30))
        ks = []
        for _ in range(count):
            kind = str(rng.choice(list(_RATE)))
            f = _kernel(kind, rng)
            ks.append((kind, f, _time_ms(kind, f) * math.exp(rng.normal(0, 0.01))))
        latency = (sum(t for _, _, t in ks) + OVERHEAD_MS) * math.exp(rng.normal(0, 0.01))
        sha = hashlib.sha256(f"{seed}/{i}".encode()).hexdigest()
        out.append(KernelSample(model_sha256=sha, family=f"fam{i % families}", platform_id="p", latency_ms=latency,
                                kernels=tuple(ks), profiled_ms=sum(t for _, _, t in ks),
                                matched_ms=sum(t for _, _, t in ks)))
    return out


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic(120)


@pytest.fixture(scope="module")
def split(synthetic):
    return split_random(synthetic, seed=0)


@pytest.fixture(scope="module")
def predictor(split):
    return train_kernel_predictor(split[0], seed=0)


# ---------------------------------------------------------------- learning


def test_kernel_predictor_learns_sum_of_kernels_plus_overhead(split):
    """Fails if per-type regressors or the overhead fit do not recover a known latency formula on held-out models."""
    train_set, test_set = split
    report = evaluate_kernel_split(train_set, test_set, seed=0)
    p = report["predictor"]
    assert report["n_train"] == len(train_set) and report["n_test"] == len(test_set) == p["n"]
    assert p["acc_10"] >= 0.9 and p["mape"] < 0.05 and p["spearman"] > 0.95, p
    assert set(p) >= {"acc_5", "acc_10", "mape", "rmspe", "spearman", "n", "interval_coverage", "interval_level",
                      "interval_log"}
    assert p["interval_coverage"] >= 0.75 and p["interval_level"] == 0.9
    assert report["kernel_time_share"] == pytest.approx(float(np.median(
        [s.profiled_ms / s.latency_ms for s in train_set + test_set])))
    assert report["unseen_kernel_types"] == []


def test_overhead_is_recovered(predictor):
    """Fails if the fitted overhead at a typical kernel count is far from the 1 ms the data was built with."""
    overhead_at_18 = predictor.intercept_ms + predictor.per_kernel_ms * 18
    assert predictor.kernel_scale == pytest.approx(1.0, abs=0.05)
    assert overhead_at_18 == pytest.approx(OVERHEAD_MS, abs=0.15)


def test_leave_family_out_reports_every_family_and_pools(synthetic):
    """Fails if a family is missing from the folds or the pooled report does not score every model once."""
    report = evaluate_kernel_leave_family_out(synthetic[:60], seed=0)
    assert sorted(report["folds"]) == ["fam0", "fam1", "fam2", "fam3"]
    assert report["pooled"]["n_test"] == 60 and "n_train" not in report["pooled"]
    assert report["pooled"]["predictor"]["acc_10"] >= 0.8


def test_training_is_deterministic_and_order_independent(split):
    """Fails if the same samples in another order give another model (bagging draws rows by position)."""
    a = train_kernel_predictor(split[0][:40], seed=3, calibrate=False)
    b = train_kernel_predictor(list(reversed(split[0][:40])), seed=3, calibrate=False)
    assert a.config() == b.config() and a.model_texts() == b.model_texts()


def test_rare_and_unseen_kernel_types_fall_back_and_are_reported(split):
    """Fails if a rare type gets a LightGBM, if an unseen type is not reported, or if either breaks predictions."""
    train_set, test_set = split
    rare = [replace(s, kernels=s.kernels + (("softmax", s.kernels[0][1], 0.01),)) for s in train_set[:3]]
    p = train_kernel_predictor(rare + train_set[3:], calibrate=False)
    assert p.config()["types"]["softmax"]["kind"] == "rate" and "softmax" not in p.model_texts()
    assert p.config()["types"]["conv2d+relu"]["kind"] == "lgbm"
    odd = replace(test_set[0], kernels=test_set[0].kernels + (("other:Einsum", test_set[0].kernels[0][1], None),))
    assert p.unseen_kernel_types(odd) == ["other:Einsum"] and p.unseen_kernel_types(test_set[0]) == []
    both = p.predict([test_set[0], odd])
    assert np.all(np.isfinite(both)) and both[1] > both[0]


def test_kernels_without_time_are_still_predicted(split):
    """Fails if a kernel with no profiled time breaks training or is left out of the prediction."""
    train_set, test_set = split
    holes = [replace(s, kernels=tuple((k, f, None if i == 0 else t) for i, (k, f, t) in enumerate(s.kernels)))
             for s in train_set]
    p = train_kernel_predictor(holes, calibrate=False)
    fewer = replace(test_set[0], kernels=test_set[0].kernels[1:])
    assert p.predict([test_set[0]])[0] > p.predict([fewer])[0]


# ---------------------------------------------------------------- persistence


def test_round_trip_through_json_and_model_texts_gives_identical_predictions(predictor, split):
    """Fails if config + LightGBM texts do not rebuild the predictor exactly, or if they are not plain JSON/text."""
    config = json.loads(json.dumps(predictor.config()))
    texts = predictor.model_texts()
    assert all(isinstance(t, str) for t in texts.values()) and set(texts) == set(_RATE)
    again = KernelPredictor.from_parts(config, texts)
    test_set = split[1]
    assert np.array_equal(again.predict(test_set), predictor.predict(test_set))
    for a, b in zip(again.predict_interval(test_set), predictor.predict_interval(test_set)):
        assert np.array_equal(a, b)
    assert again.config() == predictor.config()


def test_from_parts_rejects_foreign_configs(predictor):
    """Fails if a config of another version or feature schema, or one missing a model text, loads silently."""
    config = predictor.config()
    texts = predictor.model_texts()
    with pytest.raises(ValueError, match="version"):
        KernelPredictor.from_parts({**config, "version": 99}, texts)
    with pytest.raises(ValueError, match="schema"):
        KernelPredictor.from_parts({**config, "feature_schema_version": -1}, texts)
    with pytest.raises(ValueError, match="add"):
        KernelPredictor.from_parts(config, {k: v for k, v in texts.items() if k != "add"})


def test_errors_for_empty_or_untimed_data(split):
    """Fails if training on nothing, or on samples without a single profiled kernel time, does not say so."""
    with pytest.raises(ValueError, match="at least 2"):
        train_kernel_predictor([])
    untimed = [replace(s, kernels=tuple((k, f, None) for k, f, _ in s.kernels)) for s in split[0][:5]]
    with pytest.raises(ValueError, match="no kernel"):
        train_kernel_predictor(untimed, calibrate=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate_kernel_split(split[0], [])
    assert train_kernel_predictor(split[0][:10], calibrate=False).predict([]).shape == (0,)


# ---------------------------------------------------------------- matching


def _node(name, op, inputs, outputs, shape, macs=1000, **kw):
    raw = {"conv2d": "Conv", "activation:relu": "Relu", "add": "Add", "reshape": "Flatten", "dense": "Gemm",
           "slice": "Slice", "concat": "Concat"}[op]
    return NodeFeatures(name=name, op_type=op, raw_op=raw, inputs=tuple(inputs), outputs=tuple(outputs),
                        input_shapes=(shape,), output_shapes=(shape,), macs=macs, act_read_bytes=400,
                        act_write_bytes=400, **kw)


def _features(raw) -> ModelFeatures:
    return ModelFeatures(nodes=fuse_activations(raw, ()), model={"node_count": 0.0}, format="onnx", source="t",
                         raw_nodes=list(raw))


@pytest.fixture
def tiny():
    """conv(+relu) -> conv -> add(residual) -> flatten -> dense, named as the zoo's emitters name things."""
    s = (1, 8, 4, 4)
    raw = [
        _node("c1", "conv2d", ["x"], ["c1/pre_act"], s, macs=100_000),
        _node("c1/relu", "activation:relu", ["c1/pre_act"], ["c1"], s),
        _node("c2", "conv2d", ["c1"], ["c2"], s, macs=100_000),
        _node("add", "add", ["c1", "c2"], ["add"], s, macs=128),
        _node("flat", "reshape", ["add"], ["flat"], (1, 128)),
        _node("fc", "dense", ["flat"], ["fc"], (1, 10), macs=1280),
    ]
    return _features(raw)


def _op(name, op_type, us, out="1x8x4x4", inp="1x8x4x4"):
    return {"node_name": name, "op_type": op_type, "provider": "CPUExecutionProvider", "input_shapes": [inp],
            "output_shapes": [out], "median_us": us, "mean_us": us, "runs": 5}


def test_profile_names_decorated_by_onnxruntime_map_to_our_kernels(tiny):
    """Fails if an ORT-renamed, ORT-fused or ORT-invented node's time is lost or lands on the wrong kernel.

    ``c1_nchwc`` (our Conv+Relu), ``ReorderOutput_token_3`` (belongs with the
    conv before it), ``c2/pre_act_nchwc``-style output names, a residual add
    fused into the conv (the add gets part of the conv's time, by work),
    ``flat`` (our layout op: attached to the kernel it reads from) and
    ``fused fc``.
    """
    assert [k.kernel_type for k in tiny.kernels] == ["conv2d+relu", "conv2d", "add", "dense"]
    ops = [_op("c1_nchwc", "Conv", 100.0), _op("ReorderOutput_token_3", "ReorderOutput", 10.0),
           _op("c2_nchwc", "Conv", 50.0), _op("flat", "Flatten", 4.0, out="1x128"),
           _op("fused fc", "FusedGemm", 20.0, out="1x10")]
    m = match_profile(tiny, ops)
    assert m.matched_share == pytest.approx(1.0) and m.unmatched == ()
    t = m.kernel_times_ms
    assert t[0] == pytest.approx(0.110)  # conv + its reorder
    assert t[1] + t[2] == pytest.approx(0.054) and 0 < t[2] < t[1]  # conv2 + absorbed add + flatten, split by work
    assert t[3] == pytest.approx(0.020)
    assert (m.by_name, m.attached, m.absorbed) == (3, 2, 1)


def test_unknown_compute_nodes_match_by_shape_and_fusion_suffixes_strip(tiny):
    """Fails if a node ORT names after nothing of ours is not matched by shape, or a '.../XFusion/' name is not stripped."""
    ops = [_op("c1/SomethingFusion/", "FusedConv", 100.0), _op("SkipThing", "Weird", 30.0),
           _op("add", "Add", 5.0), _op("fc", "Gemm", 20.0, out="1x10")]
    m = match_profile(tiny, ops)
    assert m.by_name == 3 and m.by_shape == 1 and m.matched_share == pytest.approx(1.0)
    assert m.kernel_times_ms[1] == pytest.approx(0.030)  # c2: the only kernel of that shape no name reached


def test_kernel_sample_and_merged_profiles(tiny):
    """Fails if repeated profiles are not reduced to per-node medians or the sample's bookkeeping is off."""
    a = [_op("c1", "FusedConv", 100.0), _op("c2", "Conv", 40.0), _op("fc", "Gemm", 10.0, out="1x10")]
    b = [_op("c1", "FusedConv", 120.0), _op("c2", "Conv", 60.0), _op("fc", "Gemm", 30.0, out="1x10"),
         _op("Extra_1", "Weird", 1.0, out="9x9")]
    c = [_op("c1", "FusedConv", 110.0), _op("c2", "Conv", 50.0), _op("fc", "Gemm", 20.0, out="1x10")]
    merged = merge_profiles([a, b, c])
    assert [o["median_us"] for o in merged] == [110.0, 50.0, 20.0, 1.0]
    s = kernel_sample_from_profile(tiny, merged, 0.25, model_sha256="s", family="f", platform_id="p")
    assert s.profiled_ms == pytest.approx(0.181) and s.matched_ms == pytest.approx(0.181)
    assert [k for k, _, _ in s.kernels] == tiny.kernel_types()
    assert sum(t for _, _, t in s.kernels) == pytest.approx(0.181)
    assert s.kernels[0][1] == tiny.kernels[0].numeric()
    with pytest.raises(ValueError):
        kernel_sample_from_profile(tiny, merged, 0.0)


# ---------------------------------------------------------------- store


def test_load_kernel_samples_from_a_real_store(tmp_path, tiny, caplog):
    """Fails if measurements with operators are not joined with their model, repeats not reduced, or if failed
    runs, TFLite models, measurements without a profile or missing files are not skipped (the last with a warning)."""
    pytest.importorskip("onnx")
    from fleetmeter.modeler.features import extract_features
    from fleetmeter.modeler.zoo.families import SMALL_FIXED, derive_seed, get_family
    from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes

    arch = get_family("mobilenetv2").sample(derive_seed(1, "mobilenetv2", 0), name="m", **SMALL_FIXED["mobilenetv2"])
    data = onnx_bytes(build_onnx(arch, seed=0))
    sha = hashlib.sha256(data).hexdigest()
    blobs = BlobStore(tmp_path / "blobs")
    staged = tmp_path / "staged"
    staged.write_bytes(data)
    blobs.adopt(staged, sha)
    features = extract_features(blobs.path(sha))
    ops = [_op(k.name + "_nchwc", "Conv", 10.0 * (i + 1), out="x") for i, k in enumerate(features.kernels)]
    gone, lite = "e" * 64, "f" * 64
    store = Store(tmp_path / "fleetmeter.sqlite")
    try:
        for s, fmt in ((sha, "onnx"), (gone, "onnx"), (lite, "tflite")):
            store.add_model({"sha256": s, "name": s[:4], "format": fmt, "size_bytes": 1,
                             "info": {"family": "mobilenetv2"}})
        runs = [(sha, 1.0, ops, ""), (sha, 3.0, [], ""), (sha, 2.0, ops, ""), (sha, 50.0, ops, "oom"),
                (gone, 1.0, ops, ""), (lite, 1.0, ops, "")]
        for i, (s, median, operators, failure) in enumerate(runs):
            store.record_measurement({
                "measurement_id": f"m{i}", "job_id": "", "agent_id": "a", "platform_id": "ort-cpu",
                "model_sha256": s, "latency_ms": None if failure else {"median": median}, "failure_kind": failure,
                "samples_ms": [], "operators": operators})
        with caplog.at_level("WARNING"):
            samples = load_kernel_samples(store, tmp_path / "blobs", cache={})
        assert load_kernel_samples(store, tmp_path / "blobs", platform_ids=["other"]) == []
    finally:
        store.close()
    assert [s.model_sha256 for s in samples] == [sha]
    s = samples[0]
    assert s.latency_ms == 2.0 and s.family == "mobilenetv2" and s.platform_id == "ort-cpu"
    assert s.matched_ms == pytest.approx(s.profiled_ms) and len(s.kernels) == len(features.kernels)
    assert s.model_features == dict(features.model)
    assert "no usable model file" in caplog.text and gone[:12] in caplog.text


def test_public_names_are_listed():
    """Fails if __all__ names something the module does not define."""
    for name in kernels.__all__:
        assert hasattr(kernels, name), name


# ------------------------------------------------ choosing and saving (train.run_train_task, registry)


def _model_level(samples) -> list:
    """Model-level samples of the same models: aggregate features only (what the model-level predictor sees)."""
    from fleetmeter.modeler.dataset import Sample

    out = []
    for s in samples:
        feats = {"macs": sum(f["macs"] for _, f, _ in s.kernels), "node_count": float(len(s.kernels)),
                 "param_bytes": sum(f["param_bytes"] for _, f, _ in s.kernels)}
        for kind, _, _ in s.kernels:
            feats[f"count:{kind}"] = feats.get(f"count:{kind}", 0.0) + 1
        out.append(Sample(model_sha256=s.model_sha256, family=s.family, platform_id=s.platform_id,
                          values={"latency_ms": s.latency_ms}, features=feats))
    return out


def _key_of(method: str) -> str:
    from fleetmeter.modeler.methods import METHOD_KEYS

    return METHOD_KEYS[method]


def test_the_better_granularity_serves_and_round_trips_through_the_registry(synthetic, tmp_path):
    """On a device that is a sum of kernels the kernel-level predictor wins on the same held-out models,
    the reason is recorded, and the registry gives back the same predictor."""
    from fleetmeter.modeler.registry import Registry
    from fleetmeter.modeler.train import TrainTask, run_train_task

    result = run_train_task(TrainTask("p", "latency_ms", tuple(_model_level(synthetic)), 0, False,
                                      tuple(synthetic)))
    rnd = result.metrics["random_split"]
    assert rnd["kernel"]["n"] == rnd["predictor"]["n"] == rnd["n_test"]
    assert result.granularity == "kernel" and result.chosen_because.startswith("kernel had the best")
    assert rnd["kernel"]["acc_10"] > rnd["predictor"]["acc_10"]
    assert result.kernel_predictor is not None
    # the best model-level candidate is kept beside it (a transfer's source): the model-level winner
    cv = result.metrics["cross_validation"]
    assert result.predictor is not None and cv[_key_of(result.predictor.method)] is not None
    reg = Registry(tmp_path / "reg")
    version = reg.save_result(result)
    loaded = reg.load("p", "latency_ms", version)
    assert loaded.manifest["granularity"] == "kernel" and loaded.manifest["chosen_because"] == result.chosen_because
    np.testing.assert_allclose(loaded.predictor.predict(synthetic[:10]),
                               result.kernel_predictor.predict(synthetic[:10]), rtol=1e-12)
    level = _model_level(synthetic[:10])
    assert loaded.manifest["model_level"]["method"] == result.predictor.method
    np.testing.assert_allclose(loaded.model_level.predict(level), result.predictor.predict(level), rtol=1e-12)
    # a new platform adapts from it: the kept model-level candidate is the source
    from fleetmeter.controller.adapt import _sources
    from fleetmeter.modeler.serving import PredictorPool

    (pid, source), = _sources(PredictorPool(reg), "new", [], "latency_ms")[0]
    assert pid == "p" and source.method == result.predictor.method
    # a kernel-level version without one (written before they were kept) is no source, and says why
    reg.save(result.kernel_predictor, platform_id="p", training_fingerprint="old")
    with pytest.raises(FailedPrecondition, match="kernel-level, trained before model-level candidates"):
        _sources(PredictorPool(reg), "new", [], "latency_ms")
    # A damaged kernel file is refused, not silently mispredicted.
    kernel_file = next((reg.version_dir("p", "latency_ms", version) / "kernels").iterdir())
    kernel_file.write_text(kernel_file.read_text() + "\n")
    with pytest.raises(FailedPrecondition, match="does not match its manifest"):
        reg.load("p", "latency_ms", version)


def test_too_few_profiles_keep_the_model_level_predictor(synthetic):
    from fleetmeter.modeler.train import TrainTask, run_train_task

    result = run_train_task(TrainTask("p", "latency_ms", tuple(_model_level(synthetic[:40])), 0, False,
                                      tuple(synthetic[:5])))
    assert result.granularity == "model" and "only 5 profiled models" in result.chosen_because
    assert result.predictor is not None and "kernel" not in result.metrics["random_split"]
