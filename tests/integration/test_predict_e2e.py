"""Predictions end to end: a real sweep measures zoo models, the controller trains (Ray tasks), and
callers predict over real gRPC through the Python API, the CLI and PredictBatch.

The module has its own fleet (it trains, pins and asserts on predictor versions: fleet-wide state that
no other module may touch) and one module-scoped sweep and training run that every test builds on; the
order of the tests below is the order a user meets the feature (nothing trained yet → train → predict →
list/pin/eval), but each test passes alone and in any order: a test that adds a version says which one
it added, and the others ask which version serves.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("lightgbm")

from fleetmeter import Client  # noqa: E402
from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated  # noqa: E402
from fleetmeter.modeler.zoo.families import SMALL_FIXED, derive_seed, get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.v1 import common_pb2, fleet_pb2  # noqa: E402

from _support import e2e_fleet, open_guard_reading  # noqa: E402  (tests/ is on sys.path)

FAMILIES = ("resnet", "mobilenetv2", "vgg")
PER_FAMILY = 8
SIZES = (32, 48, 64, 96)
SETTINGS = common_pb2.BenchSettings(warmup_runs=2, min_runs=5, min_duration_ms=60, max_duration_ms=2000)
CONTRACT = {"platform", "target", "value", "lower", "upper", "unit", "predictor_version"}


def _model(family: str, index: int) -> bytes:
    fixed = dict(SMALL_FIXED[family])
    key = "base_resolution" if "base_resolution" in fixed else "input_size"
    if key in fixed:
        fixed[key] = SIZES[index % len(SIZES)]
    arch = get_family(family).sample(derive_seed(5, family, index), name=f"{family}-{index}", **fixed)
    return onnx_bytes(build_onnx(arch, seed=index))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """This module's own controller and agents (overrides the shared session fleet)."""
    with e2e_fleet(tmp_path_factory.mktemp("predict-fleet")) as f:
        yield f


@pytest.fixture(scope="module")
def measured(fleet, tmp_path_factory):
    """24 zoo models measured on the onnxruntime agent's platform (with operator profiles)."""
    root = tmp_path_factory.mktemp("predict-models")
    shas = []
    with fleet.client() as c:
        for family in FAMILIES:
            for i in range(PER_FAMILY):
                path = root / f"{family}-{i}.onnx"
                path.write_bytes(_model(family, i))
                shas.append(c.upload_model(path).model.sha256)
        devices = {d.name: d for d in c.list_devices()}
        ort, lite = devices["ort"].platform_ids[0], devices["lite"].platform_ids[0]
        sweep = c.submit_sweep(fleet_pb2.SweepSpec(
            models=shas, platforms=fleet_pb2.PlatformSelector(platform_ids=[ort]), settings=SETTINGS,
            profile_operators=True, repeat_sample=-1, reading=open_guard_reading()))  # tests training, not the guard
        for _ in c.watch_sweep(sweep.sweep_id, timeout_s=300):
            pass
        done = c.get_sweep(sweep.sweep_id).progress
        # Readings flagged 'disturbed' (a busy or slow host) do not train: the models that do.
        trainable = {m.model_sha256 for m in c.list_measurements(sweep_id=sweep.sweep_id)
                     if not m.failure_kind and "disturbed" not in m.flags}
    assert (done.done, done.failed) == (len(shas), 0)
    transformer = root / "transformer.onnx"
    transformer.write_bytes(_model("transformer", 0))
    return {"platform": ort, "untrained_platform": lite, "root": root, "shas": shas, "trainable": trainable,
            "transformer": transformer, "known": root / "resnet-0.onnx"}


@pytest.fixture(scope="module")
def trained(fleet, measured):
    """Train once (latency and energy): the first version on this fleet; the progress messages of that run."""
    with fleet.client() as c:
        return list(c.train(targets=["latency_ms", "energy_mj"], min_samples=10, timeout_s=600))


def _serving_version(fleet, platform: str, target: str = "latency_ms") -> int:
    """The predictor version the controller serves now (another test may have added or pinned one)."""
    with fleet.client() as c:
        (info,) = [p for p in c.list_predictors([platform]) if p.target == target]
    return info.version


def _cli(fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args, "--controller", fleet.address,
                           "--api-token", fleet.api_token], capture_output=True, text=True, timeout=300)


def test_nothing_trained_yet_is_a_clear_error(fleet, measured):
    """Asked on the LiteRT agent's platform, which no test here trains (so it holds whatever ran before)."""
    untrained = measured["untrained_platform"]
    with fleet.client() as c:
        with pytest.raises(FailedPrecondition, match="fleetmeter train"):
            c.predict(measured["known"], platforms=[untrained])
        assert c.list_predictors([untrained]) == []


def test_train_streams_progress_and_saves_versions(measured, trained):
    messages = trained
    stages = [m.stage for m in messages]
    assert stages[0] == "loading" and stages[-1] == "done" and "training" in stages
    results = {(r.platform, r.target): r for r in messages[-1].results}
    lat = results[(measured["platform"], "latency_ms")]
    # Every undisturbed reading of the sweep trains (at least; nothing else here is measured to train on).
    assert lat.version == 1 and lat.n_samples >= len(measured["trainable"]) and not lat.skipped
    metrics = json.loads(lat.metrics_json)
    for method in ("predictor", "opcount_lgbm", "flops_linear"):
        assert metrics["random_split"][method]["n"] == metrics["random_split"]["n_test"] > 0
    assert set(metrics["leave_family_out"]["folds"]) >= set(FAMILIES)
    # The sweep profiled operators: the kernel-level predictor was evaluated on the same held-out models,
    # and whichever did better serves, with the reason recorded.
    rnd = metrics["random_split"]
    # Same held-out models for both; other modules' unprofiled models make the model-level set larger, and
    # then the model-level predictor is also scored on the profiled ones alone.
    same_models = rnd["model_on_profiled"]["predictor"] if "model_on_profiled" in rnd else rnd["predictor"]
    assert rnd["kernel"]["n"] == same_models["n"] > 0
    assert metrics["leave_family_out"]["pooled"]["kernel"]["n"] >= len(measured["trainable"])
    assert lat.granularity in ("model", "kernel") and "held-out models" in lat.chosen_because
    # No power sensor on this machine: energy was never measured, so nothing is trained for it.
    energy = results[(measured["platform"], "energy_mj")]
    assert energy.skipped and energy.version == 0


def test_predict_python_api_and_contract(fleet, measured, trained, monkeypatch):
    import fleetmeter

    monkeypatch.setenv("FLEETMETER_CONTROLLER", fleet.address)
    monkeypatch.setenv("FLEETMETER_API_TOKEN", fleet.api_token)
    version = _serving_version(fleet, measured["platform"])
    for model in (measured["known"], measured["known"].read_bytes()):
        (p,) = fleetmeter.predict(model, platforms=measured["platform"])
        assert set(p.to_dict()) >= CONTRACT
        assert (p.platform, p.target, p.unit, p.predictor_version) == (measured["platform"], "latency_ms", "ms",
                                                                        version)
        assert 0 < p.lower <= p.value <= p.upper
        # Nothing about the model itself; only the predictor's standing warnings (a small test set here).
        assert not [w for w in p.warnings if any(k in w for k in ("never seen", "dynamic dimension", "control-flow",
                                                                    "quantized", "could not resolve"))], p.warnings
    with Client(fleet.address, fleet.api_token) as c:
        # All platforms with a predictor (only one here); by unique prefix; by uploaded sha256.
        assert measured["platform"] in [p.platform for p in c.predict(measured["known"])]
        assert c.predict(measured["known"], platforms=measured["platform"][:-3])[0].platform == measured["platform"]
        by_sha = c.predict_sha256(measured["shas"][0], platforms=[measured["platform"]])
        assert by_sha[0].value == pytest.approx(c.predict(measured["known"], platforms=measured["platform"])[0].value)


def test_predictions_follow_the_measurements(fleet, measured, trained):
    """The bigger the model, the slower: the predictor ranks the measured models as they measured."""
    with fleet.client() as c:
        measured_ms = {m.model_sha256: m.latency_ms.median for m in c.list_measurements(
            platform_id=measured["platform"])}
        predicted = {sha: c.predict_sha256(sha)[0].value for sha in measured["shas"]}
    shas = measured["shas"]
    from fleetmeter.modeler.metrics import spearman

    assert spearman([predicted[s] for s in shas], [measured_ms[s] for s in shas]) > 0.8


def test_errors_name_the_problem(fleet, measured, trained):
    with fleet.client() as c:
        with pytest.raises(NotFound, match="unknown platform 'no-such-phone'.*known platforms"):
            c.predict(measured["known"], platforms=["no-such-phone"])
        with pytest.raises(InvalidArgument, match="broken.onnx"):
            bad = measured["root"] / "broken.onnx"
            bad.write_bytes(b"\x08\x01garbage that is not a model")
            c.predict(bad)
        with pytest.raises(FailedPrecondition, match="no energy_mj predictor"):
            c.predict(measured["known"], platforms=[measured["platform"]], targets=["energy_mj"])
        with pytest.raises(InvalidArgument, match="unknown target"):
            c.predict(measured["known"], targets=["speed"])
        with pytest.raises(FailedPrecondition, match="no latency_ms predictor for platform"):
            c.predict(measured["known"], platforms=[measured["untrained_platform"]])
    with Client(fleet.address, "wrong-token") as c:
        with pytest.raises(Unauthenticated):
            c.predict(measured["known"])
    with fleet.client() as c:  # the service kept running
        assert c.predict(measured["known"], platforms=measured["platform"])[0].value > 0


def test_unseen_operator_is_a_warning_with_the_prediction(fleet, measured, trained):
    with fleet.client() as c:
        (p,) = c.predict(measured["transformer"], platforms=measured["platform"])
    assert p.value > 0
    (warning,) = [w for w in p.warnings if "never seen in training" in w]
    assert "layernorm" in warning, warning


def test_predict_batch_keeps_going_past_a_bad_model(fleet, measured, trained):
    bad = b"not a model at all"
    models = [measured["known"], bad, measured["root"] / "vgg-3.onnx"]
    with fleet.client() as c:
        out = list(c.predict_batch(models, platforms=[measured["platform"]]))
    assert len(out) == 3
    assert out[0][0].value > 0 and out[2][0].value > 0
    assert isinstance(out[1], InvalidArgument)


def test_cli_predict_eval_and_pinning(fleet, measured, trained):
    run = _cli(fleet, "predict", str(measured["known"]), "--json")
    assert run.returncode == 0, run.stderr
    (record,) = [r for r in json.loads(run.stdout) if r["platform"] == measured["platform"]]
    assert set(record) >= CONTRACT and record["unit"] == "ms"
    table = _cli(fleet, "predict", str(measured["known"]))
    # the table fits 100 columns: a long platform id may be shortened (start…end), never dropped
    assert table.returncode == 0 and "ms" in table.stdout
    assert measured["platform"] in table.stdout or measured["platform"][:6] in table.stdout
    bad = _cli(fleet, "predict", str(measured["known"]), "--platform", "nope")
    assert bad.returncode == 1 and "unknown platform 'nope'" in bad.stderr

    for split in ("random", "family"):
        ev = _cli(fleet, "eval", "--split", split, "--json")
        assert ev.returncode == 0, ev.stderr
        (row,) = [r for r in json.loads(ev.stdout) if r["platform"] == measured["platform"]]
        assert {"predictor", "kernel", "opcount_lgbm", "flops_linear"} <= set(row["methods"])
        assert row["n_test"] > 0
    text = _cli(fleet, "eval", "--split", "random")
    assert "baseline: FLOPs linear" in text.stdout and "noise ceiling" in text.stdout

    # Another training run adds the next version, which serves; pinning the first makes it serve again.
    with fleet.client() as c:
        (before,) = [p for p in c.list_predictors([measured["platform"]]) if p.target == "latency_ms"]
    versions = list(before.versions)
    train = _cli(fleet, "train", "--platform", measured["platform"], "--target", "latency_ms", "--no-family-split",
                 "--min-samples", "10", "--json")
    assert train.returncode == 0, train.stderr
    (trained_row,) = json.loads(train.stdout)
    added = max(versions) + 1
    assert (trained_row["platform"], trained_row["version"]) == (measured["platform"], added)
    assert "leave_family_out" not in trained_row["metrics"] and trained_row["metrics"]["random_split"]["n_test"] > 0
    with fleet.client() as c:
        assert c.predict(measured["known"], platforms=measured["platform"])[0].predictor_version == added
        info = c.pin_predictor(measured["platform"], "latency_ms", 1)
        assert (info.version, info.pinned, list(info.versions)) == (1, 1, versions + [added])
        assert c.predict(measured["known"], platforms=measured["platform"])[0].predictor_version == 1
        with pytest.raises(NotFound, match="v99"):
            c.pin_predictor(measured["platform"], "latency_ms", 99)
    unpin = _cli(fleet, "predictors", "unpin", measured["platform"], "latency_ms")
    assert unpin.returncode == 0, unpin.stderr
    listed = _cli(fleet, "predictors", "list", "--json")
    (entry,) = [e for e in json.loads(listed.stdout) if e["target"] == "latency_ms"
                and e["platform"] == measured["platform"]]
    assert entry["version"] == added and entry["pinned"] is None


def test_predict_at_the_size_the_model_runs(fleet, measured, trained):
    """Fails if input shapes do not reach the served features: a network asked for at 3x its side costs
    more on a predictor trained on these sizes (32-96 px)."""
    import onnx

    name = onnx.load(str(measured["known"]), load_external_data=False).graph.input[0].name
    with fleet.client() as c:
        base = c.predict(measured["known"], platforms=measured["platform"])[0].value
        big = c.predict(measured["known"], platforms=measured["platform"], shapes={name: (1, 3, 96, 96)})[0].value
        with pytest.raises(InvalidArgument, match=f"no input named 'images'.*inputs are: {name}"):
            c.predict(measured["known"], platforms=measured["platform"], shapes={"images": (1, 3, 96, 96)})
    assert big > base
    run = _cli(fleet, "predict", str(measured["known"]), "--platform", measured["platform"], "--shape",
               f"{name}=1x3x96x96", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)[0]["value"] == pytest.approx(big)
