"""``fleetmeter adapt`` end to end: a real controller, two real agents (onnxruntime, LiteRT).

The onnxruntime platform is the source: 12 zoo models measured and trained there. The LiteRT platform is
new: ``adapt`` plans which of the 12 TFLite builds of the same architectures to measure (a budget of 5),
measures them with a real sweep on the LiteRT agent, and saves a transferred predictor, which then serves
predictions. ``--from-readings`` adapts again from the stored readings with a smaller budget.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("lightgbm")

from fleetmeter.errors import NotFound  # noqa: E402
from fleetmeter.modeler.zoo.families import derive_seed  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from fleetmeter.v1 import common_pb2, fleet_pb2  # noqa: E402

from _support import e2e_fleet, small_zoo_sample  # noqa: E402  (tests/ is on sys.path)

FAMILIES = ("resnet", "mobilenetv2", "vgg")
PER_FAMILY = 4
SETTINGS = common_pb2.BenchSettings(warmup_runs=1, min_runs=3, min_duration_ms=20, max_duration_ms=1000)
# One session per reading and a guard that tolerates the test machine's other work: a reading flagged
# 'disturbed' does not train, and on 2 shared cores most would be.
READING = common_pb2.ReadingSettings(sessions=1, isolate=False, max_other_cpu_cores=64.0, max_steal_share=1.0,
                                     max_probe_slowdown=100.0, max_speed_wait_s=0.0)
SPEC = fleet_pb2.SweepSpec(settings=SETTINGS, reading=READING, repeat_sample=-1)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A fleet of its own (it trains and adapts): the onnxruntime platform measured on 12 models and trained;
    12 TFLite builds of the same architectures uploaded, unmeasured."""
    with e2e_fleet(tmp_path_factory.mktemp("adapt-fleet")) as fleet:
        yield _measured_source(fleet, tmp_path_factory.mktemp("adapt-models"))


@pytest.fixture(scope="module")
def fleet(source):
    return source["fleet"]


def _measured_source(fleet, root):
    onnx_shas, tflite_shas = [], []
    with fleet.client() as c:
        for family in FAMILIES:
            for i in range(PER_FAMILY):
                arch = small_zoo_sample(family, derive_seed(9, family, i))
                (root / f"{family}-{i}.onnx").write_bytes(onnx_bytes(build_onnx(arch, seed=i)))
                (root / f"{family}-{i}.tflite").write_bytes(build_tflite(arch, seed=i))
                onnx_shas.append(c.upload_model(root / f"{family}-{i}.onnx").model.sha256)
                tflite_shas.append(c.upload_model(root / f"{family}-{i}.tflite").model.sha256)
        platform_of = {d.name: d.platform_ids[0] for d in c.list_devices()}
        ort, lite = platform_of["ort"], platform_of["lite"]
        spec = fleet_pb2.SweepSpec()
        spec.CopyFrom(SPEC)
        spec.models.extend(onnx_shas)
        spec.platforms.platform_ids.append(ort)
        list(c.watch_sweep(c.submit_sweep(spec).sweep_id, timeout_s=120))  # until the sweep is over
        results = None
        for msg in c.train([ort], ["latency_ms"], skip_family_split=True, min_samples=5):
            results = list(msg.results) or results
    assert results and results[0].version, results
    return {"ort": ort, "lite": lite, "tflite": tflite_shas, "onnx": onnx_shas, "fleet": fleet}


def _cli(fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args, "--controller", fleet.address,
                           "--api-token", fleet.api_token], capture_output=True, text=True, timeout=180)


def test_adapt_measures_a_planned_budget_and_saves_a_transferred_predictor(fleet, source):
    stages = []
    with fleet.client() as c:
        # among the uploaded TFLite builds (the controller also stores its built-in reference models)
        got = c.adapt(source["lite"], [source["ort"]], 5, source["tflite"], targets=["latency_ms"], spec=SPEC,
                      progress=lambda stage, message: stages.append(stage))
        assert got["platform"] == source["lite"] and got["from_platforms"] == [source["ort"]]
        assert len(got["models"]) == 5 and set(got["models"]) <= set(source["tflite"])  # only what LiteRT runs
        assert got["sweep_id"] and got["sweep_state"] == "done"
        assert stages[0] == "plan" and "measuring" in stages and stages[-1] == "training"
        (result,) = got["results"]
        assert (result.granularity, result.method, result.version) == ("transferred", "transfer", 1), result.skipped
        assert result.n_samples == 5
        metrics = json.loads(result.metrics_json)
        assert metrics["served"]["from_platforms"] == [source["ort"]]
        assert metrics["cross_validation"]  # accuracy estimated without extra measurements
        assert sorted(metrics["transfer"]["models"]) == sorted(got["models"])
        (info,) = c.list_predictors([source["lite"]], ["latency_ms"])
        assert (info.granularity, info.method, info.version) == ("transferred", "transfer", 1)
        assert source["ort"] in info.chosen_because
        (pred,) = c.predict_sha256(source["tflite"][0], platforms=[source["lite"]])
        assert pred.value > 0 and pred.granularity == "transferred" and pred.predictor_version == 1


def test_adapt_from_readings_on_the_command_line(fleet, source):
    out = _cli(fleet, "adapt", "--platform", source["lite"], "--from-readings", "--budget", "3",
               "--target", "latency_ms", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["sweep_id"] == "" and got["models"] == []
    (result,) = got["results"]
    assert (result["granularity"], result["method"], result["n_samples"]) == ("transferred", "transfer", 3)
    assert result["version"] >= 1 and result["metrics"]["served"]["from_platforms"] == [source["ort"]]


def test_a_named_source_without_a_targets_predictor_skips_that_target(fleet, source):
    """--from names a platform trained for latency only; without --target every target is tried: latency is
    adapted, the others are skipped with the reason, and the call succeeds."""
    with fleet.client() as c:
        got = c.adapt(source["lite"], [source["ort"]], 3, from_readings=True)
    by_target = {r.target: r for r in got["results"]}
    assert by_target["latency_ms"].granularity == "transferred", [(r.target, r.skipped) for r in got["results"]]
    others = [r for t, r in by_target.items() if t != "latency_ms"]
    assert others and all(r.version == 0 and r.skipped for r in others), others
    # memory is measured here but ort has no memory predictor: skipped for that reason (energy: no readings)
    assert "no platform with a peak_rss_bytes predictor" in by_target["peak_rss_bytes"].skipped


def test_adapt_without_wait_submits_the_sweep_and_names_the_next_command(fleet, source):
    """Fails if `adapt` without --wait does not submit the planned sweep, or does not print the command that fits
    the predictor once the sweep is done (the platform, --from-readings and the chosen models)."""
    out = _cli(fleet, "adapt", "--platform", source["lite"], "--from", source["ort"], "--budget", "3",
               *[x for sha in source["tflite"] for x in ("--models", sha)])
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("sweep sw-") and f"measuring 3 models on {source['lite']}" in line, line
    command = line.split("next, when it is done: ", 1)[1].split()
    assert command[:5] == ["fleetmeter", "adapt", "--platform", source["lite"], "--from-readings"]
    chosen = command[6::2]
    assert len(chosen) == 3 and all(any(sha.startswith(m) for sha in source["tflite"]) for m in chosen)
    sweep_id = line.split()[1].rstrip(":")
    with fleet.client() as c:
        sweep = c.get_sweep(sweep_id)
        # the three models (plus the noise ceiling's repeat sample of one of them)
        assert sorted(m[:12] for m in sweep.spec.models) == sorted(chosen)
        assert list(sweep.platform_ids) == [source["lite"]] and sweep.progress.total in (3, 4)
        c.cancel_sweep(sweep_id)  # the fleet stays free for the tests after this one


def test_bad_adapt_requests_are_clear_errors(fleet, source):
    with fleet.client() as c:
        with pytest.raises(NotFound, match="no platform with a latency_ms predictor"):
            c.plan_adapt(source["lite"], ["no-such-platform"], 3)
        with pytest.raises(NotFound, match="unknown platform"):
            c.plan_adapt("no-such-platform", None, 3)
    out = _cli(fleet, "adapt", "--platform", source["lite"], "--budget", "2", "--json")
    assert out.returncode == 2 and "--budget must be at least 3" in out.stderr
