"""Scripting the fleet, over real gRPC against the session's real controller (local Ray, SQLite, two agents):
``Client.results_df`` and ``fleetmeter results --format parquet`` against ``results --json``,
``Client.predictions_df`` against ``fleetmeter predict --json``, and ``examples/optuna_search.py`` searching a
zoo family under budgets on three platforms at once.

Predictors for three platforms come the way lab data does (``import`` then ``train``): the readings of a
made-up phone, board and laptop whose costs grow with each network's MACs and parameters, imported for
mobilenetv2 networks built here, then trained on the controller (Ray tasks). The measured rows that
``results`` shows come from a real sweep of two built-in models on the onnxruntime agent.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightgbm")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from fleetmeter.client import PREDICTION_COLUMNS  # noqa: E402
from fleetmeter.errors import NotFound  # noqa: E402
from fleetmeter.frames import result_keys  # noqa: E402
from fleetmeter.local_fleet import wait_until  # noqa: E402
from fleetmeter.modeler.builtin import get_builtin_model  # noqa: E402
from fleetmeter.modeler.zoo.families import derive_seed, get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.v1 import common_pb2, fleet_pb2  # noqa: E402

from _support import json_cell  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: (platform, ms per MMAC, fixed ms): three made-up devices, each twice as slow as the last.
DEVICES = (("scripting-laptop", 0.05, 0.1), ("scripting-board", 0.1, 0.3), ("scripting-phone", 0.2, 0.5))
PLATFORMS = [d[0] for d in DEVICES]
TRAINING_MODELS = 24
SEARCH_FIXED = ("--fix", "input_size=32", "--fix", "num_classes=10")


def _device_costs(arch, ms_per_mmac: float, base_ms: float, jitter: float) -> dict:
    return {"latency_ms": (base_ms + ms_per_mmac * arch.mac_count() / 1e6) * jitter,
            "energy_mj": 2.0 * ms_per_mmac * arch.mac_count() / 1e6 * jitter,
            "peak_rss_bytes": int(30e6 + 4 * arch.param_count())}


@pytest.fixture(scope="module")
def trained(fleet, tmp_path_factory):
    """The three made-up platforms, each with latency, energy and memory predictors trained on imported rows."""
    root = tmp_path_factory.mktemp("scripting-models")
    family = get_family("mobilenetv2")
    rows = []
    with fleet.client() as c:
        for i in range(TRAINING_MODELS):
            arch = family.sample(derive_seed(12, "scripting", i), name=f"mnv2-{i}", input_size=32, num_classes=10)
            path = root / f"mnv2-{i}.onnx"
            path.write_bytes(onnx_bytes(build_onnx(arch)))
            sha = c.upload_model(path).model.sha256
            for platform, ms_per_mmac, base_ms in DEVICES:
                jitter = 1.0 + 0.02 * math.sin(7.0 * i + base_ms)  # a little noise, the same on every run
                rows.append(fleet_pb2.ImportedMeasurement(
                    line=len(rows) + 2, model_sha256=sha, platform=platform, family="mobilenetv2",
                    **_device_costs(arch, ms_per_mmac, base_ms, jitter)))
        assert c.import_measurements("import:test-scripting", rows).imported == len(rows)
        results = list(c.train(PLATFORMS, ["latency_ms", "energy_mj", "peak_rss_bytes"], skip_family_split=True,
                               min_samples=10, timeout_s=600))[-1].results
    assert sorted((r.platform, r.target) for r in results if r.version) == sorted(
        (p, t) for p in PLATFORMS for t in ("latency_ms", "energy_mj", "peak_rss_bytes"))
    return {"root": root, "models": sorted(root.glob("mnv2-*.onnx"))}


@pytest.fixture(scope="module")
def sweep_id(fleet):
    """A real sweep: two built-in models measured on the onnxruntime agent."""
    with fleet.client() as c:
        shas = [c.upload_model(get_builtin_model(name, "onnx").path).model.sha256
                for name in ("tiny_mlp", "tiny_convnet")]
        ort = next(d for d in c.list_devices() if d.name == "ort").platform_ids[0]
        sweep = c.submit_sweep(fleet_pb2.SweepSpec(
            models=shas, platforms=fleet_pb2.PlatformSelector(platform_ids=[ort]), repeat_sample=-1.0,
            settings=common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=30, max_duration_ms=1000)))
        wait_until(lambda: c.get_sweep(sweep.sweep_id).progress.state == "done", 300, "the sweep to finish",
                   poll_s=0.5)
        assert c.get_sweep(sweep.sweep_id).progress.done == 2
    return sweep.sweep_id


def _cli(fleet, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**fleet.env(), "FLEETMETER_CONTROLLER": fleet.address, **(env or {})})


def _records(frame) -> list:
    return [{k: json_cell(v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_results_df_and_parquet_are_the_json_rows(fleet, sweep_id, tmp_path):
    """Fails if the DataFrame or the parquet file differ from `results --json` in a column (name, order) or a
    value, or hold anything but one row per measurement."""
    listed = _cli(fleet, "results", "--sweep", sweep_id, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and all(r["n"] >= 5 and r["sessions"] >= 1 for r in rows)
    with fleet.client() as c:
        frame = c.results_df(sweep=sweep_id)
        with_samples = c.results_df(sweep_id, samples=True)
    # --json prints its keys sorted; the frame keeps the rows' own order (model first)
    assert list(frame.columns) == result_keys() and set(result_keys()) == set(rows[0])
    key = sorted(rows, key=lambda r: r["measurement_id"])
    assert sorted(_records(frame), key=lambda r: r["measurement_id"]) == key

    out = tmp_path / "results.parquet"
    written = _cli(fleet, "results", "--sweep", sweep_id, "--format", "parquet", "--out", str(out))
    assert written.returncode == 0, written.stderr
    back = pd.read_parquet(out)
    assert list(back.columns) == result_keys()
    assert sorted(_records(back), key=lambda r: r["measurement_id"]) == key

    assert list(with_samples.columns) == result_keys(samples=True) == [*result_keys(), "samples_ms"]
    assert all(len(s) == n for s, n in zip(with_samples["samples_ms"], with_samples["n"]))


def test_results_filters_and_errors(fleet, sweep_id, trained, tmp_path):
    with fleet.client() as c:
        imported = c.results_df(platform="scripting-phone")
        with pytest.raises(NotFound, match="unknown sweep 'no-such-sweep'"):
            c.results_df(sweep="no-such-sweep")
    assert len(imported) == TRAINING_MODELS and set(imported["platform"]) == {"scripting-phone"}
    assert list(imported.columns) == result_keys()
    missing_out = _cli(fleet, "results", "--format", "parquet")
    assert missing_out.returncode == 1 and "--out" in missing_out.stderr
    as_csv = tmp_path / "results.csv"
    assert _cli(fleet, "results", "--sweep", sweep_id, "--format", "csv", "--out", str(as_csv)).returncode == 0
    assert len(pd.read_csv(as_csv)) == 2


def test_predictions_df_is_the_predict_json(fleet, trained):
    """Fails if a row of predictions_df differs from `fleetmeter predict --json` for that model."""
    models = trained["models"][:3]
    with fleet.client() as c:
        frame = c.predictions_df(models, PLATFORMS, ["latency_ms", "peak_rss_bytes"])
    assert list(frame.columns) == ["model", "model_sha256", *PREDICTION_COLUMNS]
    assert len(frame) == len(models) * len(PLATFORMS) * 2
    for model in models:
        run = _cli(fleet, "predict", str(model), "--target", "latency_ms", "--target", "peak_rss_bytes", "--json",
                   *[a for p in PLATFORMS for a in ("--platform", p)])
        assert run.returncode == 0, run.stderr
        expected = sorted(json.loads(run.stdout), key=lambda r: (r["platform"], r["target"]))
        mine = frame[frame["model"] == str(model)].drop(columns=["model", "model_sha256"])
        assert sorted(_records(mine), key=lambda r: (r["platform"], r["target"])) == expected


def _search(fleet, tmp_path, *args: str) -> dict:
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "optuna_search.py"), "--family", "mobilenetv2",
                          *SEARCH_FIXED, "--trials", "8", "--batch", "4", "--seed", "3", "--json", *args],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**fleet.env(), "FLEETMETER_CONTROLLER": fleet.address})
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


def test_optuna_example_finds_the_largest_network_within_budgets(fleet, trained, tmp_path):
    """A first search with budgets nothing exceeds gives the candidates' predictions; budgets set at one
    candidate's predicted latency then split them. Fails if the second search (same seed, so the same
    candidates) calls a candidate feasible that a budget excludes or the other way round, if its answer is not
    the largest feasible candidate, or if what it recorded is not what the controller predicts for that file."""
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    loose = _search(fleet, tmp_path, *platform_args, "--latency-ms", "1e9")
    assert len(loose["trials"]) == 8 and all(t["feasible"] for t in loose["trials"])
    first = f"latency_ms@{PLATFORMS[0]}"
    ranked = sorted(loose["trials"], key=lambda t: t["predicted"][first])
    pivot = ranked[len(ranked) // 2]
    assert ranked[-1]["predicted"][first] > pivot["predicted"][first], "the candidates must differ"
    limits = {p: pivot["predicted"][f"latency_ms@{p}"] for p in PLATFORMS}

    tight = _search(fleet, tmp_path, *platform_args, "--out", "best.onnx",
                    *[a for p in PLATFORMS for a in ("--latency-ms", f"{p}={limits[p]!r}")],
                    "--memory-bytes", f"{PLATFORMS[1]}=1e12", "--energy-mj", f"{PLATFORMS[2]}=1e9")
    assert [t["params"] for t in tight["trials"]] == [t["params"] for t in loose["trials"]]
    expected = {t["number"]: all(t["predicted"][f"latency_ms@{p}"] <= limits[p] for p in PLATFORMS)
                for t in loose["trials"]}
    assert {t["number"]: t["feasible"] for t in tight["trials"]} == expected
    assert 0 < sum(expected.values()) < len(expected)
    best = tight["best"]
    assert best["size"] == best["parameters"] == max(t["size"] for t in tight["trials"] if t["feasible"])
    assert set(best["predicted"]) == {*(f"latency_ms@{p}" for p in PLATFORMS), f"peak_rss_bytes@{PLATFORMS[1]}",
                                      f"energy_mj@{PLATFORMS[2]}"}

    with fleet.client() as c:
        again = {f"{p.target}@{p.platform}": p.value
                 for p in c.predict(tmp_path / "best.onnx", PLATFORMS, "latency_ms")}
    for name, value in again.items():
        assert best["predicted"][name] == pytest.approx(value, rel=1e-9)


def test_optuna_example_names_a_bad_budget(fleet, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "optuna_search.py"), "--platform", PLATFORMS[0],
                          "--latency-ms", "nowhere=3", "--trials", "1"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env={**fleet.env(), "FLEETMETER_CONTROLLER": fleet.address})
    assert run.returncode == 1 and "'nowhere'" in run.stderr and "latency_ms" in run.stderr
    assert os.listdir(tmp_path) == []
