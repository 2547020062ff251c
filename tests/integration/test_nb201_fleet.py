"""NAS-Bench-201 readings through the fleet path: a small generated table -> `fleetmeter import` ->
`fleetmeter train` (real gRPC, real Ray, real store) -> `fleetmeter.predict` on held-out networks.

The table is generated here (the public one stays outside the project): a device whose cost is a sum
of per-node costs plus 2 % noise, the kind of device the additive per-node model is for.
"""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from fleetmeter.modeler.features import extract_features  # noqa: E402
from fleetmeter.modeler.zoo.fam_nasbench201 import arch_from_index, build_nasbench201  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402

pytestmark = pytest.mark.integration

PLATFORM = "nb201-sim-phone"


def _fm(fleet, *args):
    env = dict(os.environ, FLEETMETER_CONTROLLER=fleet.address, FLEETMETER_API_TOKEN=fleet.api_token)
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _device_ms(features, rng) -> float:
    cost = (0.4 + 3e-7 * features.get("macs:conv2d", 0) + 0.05 * features.get("count:pool_avg", 0)
            + 0.02 * features.get("count:mul", 0) + 0.01 * features.get("count:add", 0))
    return cost * (1 + rng.uniform(-0.02, 0.02))


def test_imported_nb201_rows_train_and_predict_through_the_fleet(fleet, tmp_path, monkeypatch):
    import fleetmeter

    rng = random.Random(11)
    indices = rng.sample(range(15_625), 60)
    rows, held_out = [], []
    for n, index in enumerate(indices):
        arch = build_nasbench201(f"nb{index}", {"arch": arch_from_index(index), "channels": 8,
                                                "cells_per_stage": 2})
        data = onnx_bytes(build_onnx(arch))
        path = tmp_path / f"nb{index:05d}.onnx"
        path.write_bytes(data)
        latency = _device_ms(extract_features(data).model, rng)
        if n < 45:
            rows.append((path.name, PLATFORM, f"{latency:.5f}", "nasbench201"))
        else:
            held_out.append((path, latency))
    table = tmp_path / "nb201.csv"
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([("model", "platform", "latency_ms", "family"), *rows])

    imported = _fm(fleet, "import", str(table), "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == 45

    trained = _fm(fleet, "train", "--platform", PLATFORM, "--target", "latency_ms", "--json")
    assert trained.returncode == 0, trained.stderr
    (result,) = json.loads(trained.stdout)
    assert result["n_samples"] == 45 and result["version"]
    # Every candidate, the baselines included, was cross-validated; the winner is named with its reason.
    assert set(result["metrics"]["cross_validation"]) >= {"predictor", "additive", "additive_lgbm",
                                                          "opcount_lgbm", "flops_linear"}
    assert result["method"] in ("additive", "additive_lgbm") and "cross-validation" in result["chosen_because"]
    assert any("held-out models" in w for w in result["warnings"])  # 45 samples: a 9-model test split

    monkeypatch.setenv("FLEETMETER_CONTROLLER", fleet.address)
    monkeypatch.setenv("FLEETMETER_API_TOKEN", fleet.api_token)
    errors = []
    for path, latency in held_out:
        (prediction,) = fleetmeter.predict(str(path), platforms=[PLATFORM])
        errors.append(abs(prediction.value / latency - 1))
        assert prediction.method == result["method"]
        assert any("held-out models" in w for w in prediction.warnings)  # the standing warning travels
    assert np.mean(np.asarray(errors) <= 0.10) >= 0.8, errors

    listed = json.loads(_fm(fleet, "predictors", "list", "--platform", PLATFORM, "--json").stdout)
    assert [(p["method"], bool(p["warnings"])) for p in listed] == [(result["method"], True)]
    evaluated = json.loads(_fm(fleet, "eval", "--platform", PLATFORM, "--json").stdout)
    assert evaluated[0]["method"] == result["method"] and {"additive", "flops_linear"} <= set(evaluated[0]["methods"])
