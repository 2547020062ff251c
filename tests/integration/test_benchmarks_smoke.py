"""The benchmarks under benchmarks/ still run: each ``--quick`` in a subprocess, JSON checked.

The three quick runs start together (two of them start a real controller with
its local Ray) and write into a temporary ``--out-dir``, so the full results
in benchmarks/out/ are left alone. Numbers are not checked here — only that
each script exits 0 and writes the keys docs/benchmarks.md is built from.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("grpc")
pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
SCRIPTS = ("fidelity", "footprint", "controller_latency", "predict_speed")
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Run the ``--quick`` benchmarks concurrently; {name: (returncode, output, json or None)}."""
    out_dir = tmp_path_factory.mktemp("bench-out")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = {}
    for name in SCRIPTS:
        log = open(out_dir / f"{name}.log", "w+")
        procs[name] = (subprocess.Popen([sys.executable, str(BENCH / f"{name}.py"), "--quick",
                                         "--out-dir", str(out_dir)],
                                        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    deadline = time.monotonic() + TIMEOUT_S
    results = {}
    try:
        for name, (proc, log) in procs.items():
            try:
                rc = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()  # SIGTERM: LocalFleet's cleanup stops the controller and agents
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                rc = "timeout"
            log.seek(0)
            path = out_dir / f"{name}.json"
            results[name] = (rc, log.read()[-4000:], json.loads(path.read_text()) if path.exists() else None)
    finally:
        for proc, log in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return results


def _check_run(quick_runs, name) -> dict:
    rc, output, data = quick_runs[name]
    assert rc == 0, f"{name}.py --quick exited {rc}:\n{output}"
    assert data is not None, f"{name}.py --quick wrote no JSON:\n{output}"
    for key in ("benchmark", "quick", "machine", "settings", "summary"):
        assert key in data, f"{name}.json lacks {key!r}"
    assert data["benchmark"] == name and data["quick"] is True
    for key in ("cpu_model", "cpu_count", "python", "onnxruntime", "ai_edge_litert", "date_utc"):
        assert key in data["machine"], f"{name}.json machine lacks {key!r}"
    return data


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_fidelity_quick(quick_runs):
    data = _check_run(quick_runs, "fidelity")
    assert data["results"], "no models measured"
    for r in data["results"]:
        for key in ("model", "format", "runtime", "agent_median_ms", "plain_median_ms", "ratio_median",
                    "ratio_min", "ratio_max", "deviation_pct", "within_target", "ratios"):
            assert key in r, f"fidelity result lacks {key!r}"
        assert r["agent_median_ms"] > 0 and r["plain_median_ms"] > 0 and _finite(r["ratio_median"])
        assert r["same_input_shapes"], r
    assert {r["runtime"] for r in data["results"]} == {"onnxruntime", "litert"}
    for key in ("model_files", "within_target", "max_abs_deviation_pct", "target_pct"):
        assert key in data["summary"]


def test_footprint_quick(quick_runs):
    data = _check_run(quick_runs, "footprint")
    s = data["summary"]
    for key in ("agent_vmrss_mib", "baseline_vmrss_mib", "difference_mib", "target_mib", "within_target"):
        assert key in s, f"footprint summary lacks {key!r}"
    assert s["agent_vmrss_mib"] > 0 and s["baseline_vmrss_mib"] > 0
    assert data["breakdown"] and all(_finite(step["vmrss_mib"]) for step in data["breakdown"])


def test_controller_latency_quick(quick_runs):
    data = _check_run(quick_runs, "controller_latency")
    s = data["summary"]
    for key in ("p50", "p90", "p99", "max"):
        assert _finite(s["latency_ms"][key]), key
    assert s["jobs"] == data["settings"]["jobs"] == len(data["jobs"])
    assert s["throughput_jobs_per_s"] > 0


def test_predict_speed_quick(quick_runs):
    data = _check_run(quick_runs, "predict_speed")
    s = data["summary"]
    assert s["batched_predictions_per_s"] > 0
    assert _finite(s["grpc_new_model_p50_ms"]) and _finite(s["grpc_same_model_p50_ms"])
    assert data["grpc_predict"]["model_nodes"] >= 100
    assert set(data["grpc_predict"]["new_model"]) == {"bytes_every_call", "sha_first_then_graph", "graph_directly"}
    assert data["grpc_predict"]["server_feature_extraction_ms_p50"] > 0


@pytest.mark.parametrize("name", ("accuracy", "real_sweep", "loadgen", "features_speed", "repeatability",
                                  "fidelity_fleet", "third_party", "nb201", "read_latency", "fleet_capacity",
                                  "search", "adapt_local"))
def test_help_of_the_long_benchmarks(name):
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout


def test_nb201_quick_on_a_generated_table(tmp_path):
    """benchmarks/nb201.py end to end on a small table generated here (the public one stays outside)."""
    import csv
    import random

    from fleetmeter.modeler.zoo.fam_nasbench201 import arch_from_index, parse_arch

    rng = random.Random(3)
    table = tmp_path / "nb201.csv"
    with table.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["arch_idx", "arch_str", "accuracy_cifar100", "devA", "devB"])
        for n, index in enumerate(rng.sample(range(15_625), 130)):
            ops = parse_arch(arch_from_index(index))
            cost = 1 + sum({"nor_conv_3x3": 0.9, "nor_conv_1x1": 0.2, "avg_pool_3x3": 0.1}.get(op, 0.02) for op in ops)
            writer.writerow([n, arch_from_index(index), 70.0, f"{cost:.4f}", f"{cost * 2 + 1:.4f}"])
    proc = subprocess.run([sys.executable, str(BENCH / "nb201.py"), "--data", str(table), "--quick",
                           "--models-dir", str(tmp_path / "models"), "--out-dir", str(tmp_path), "--workers", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "nb201.json").read_text())
    assert [d["device"] for d in data["devices"]] == ["devA", "devB"]
    for device in data["devices"]:
        assert device["served_method"] and _finite(device["fleetmeter"]["acc_10"])
        assert _finite(device["one_hot_lgbm"]["acc_10"]) and "additive" in device["methods"]
    assert set(data["summary"]) >= {"beats_baseline_on", "median_gain_acc_10", "min_spearman"}


def test_search_quick_on_a_generated_table(tmp_path):
    """benchmarks/search.py end to end on a generated NB201 table (every cell; costs that grow with the convolutions,
    accuracy with them too, so the budgets bind): each method gives its figures."""
    import csv

    from fleetmeter.modeler.zoo.fam_nasbench201 import NUM_ARCHS, arch_from_index, parse_arch

    weights = {"nor_conv_3x3": 0.9, "nor_conv_1x1": 0.2, "avg_pool_3x3": 0.1, "skip_connect": 0.02, "none": 0.0}
    table = tmp_path / "nb201.csv"
    with table.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["arch_idx", "arch_str", "accuracy_cifar100", "devA", "devB", "devC"])
        for index in range(NUM_ARCHS):
            arch = arch_from_index(index)
            cost = 1 + sum(weights[op] * (1 + k % 3) for k, op in enumerate(parse_arch(arch)))
            writer.writerow([index, arch, f"{50 + 3 * cost:.3f}", f"{cost:.4f}", f"{cost * 2 + 1:.4f}",
                             f"{cost * 0.5 + 0.2:.4f}"])
    proc = subprocess.run([sys.executable, str(BENCH / "search.py"), "--data", str(table), "--quick",
                           "--devices", "devA,devB,devC", "--models-dir", str(tmp_path / "models"),
                           "--out-dir", str(tmp_path), "--workers", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "search.json").read_text())["nb201"]
    assert set(data["budgets_ms"]) == {"devA", "devB", "devC"}
    summary = {s["method"]: s for s in data["summary"]}
    assert set(summary) == {"fleetmeter", "flops_proxy", "random", "random_same_measurements"}
    ours = data["runs"][0]["fleetmeter"]
    assert ours["verified"] >= 1 and ours["measurements_used"] == 3 * ours["verified"]
    assert ours["measurements_if_all"] == 3 * ours["candidates"] and ours["candidates"] > 1
    assert summary["random"]["measurements_used_mean"] == 3 * data["trials"]


def test_adapt_quick_on_a_generated_table(tmp_path):
    """benchmarks/adapt.py end to end on a generated table of three devices, each a known map of the others
    (a power law, an affine map): every method and budget gives its figures."""
    import csv
    import random

    from fleetmeter.modeler.zoo.fam_nasbench201 import arch_from_index, parse_arch

    unit = {"nor_conv_3x3": 1.0, "nor_conv_1x1": 0.25, "avg_pool_3x3": 0.08, "skip_connect": 0.01, "none": 0.0}
    with (tmp_path / "nb201.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["arch_idx", "arch_str", "accuracy_cifar100", "phoneA", "phoneB", "phoneC"])
        for n, index in enumerate(random.Random(5).sample(range(15_625), 220)):
            arch = arch_from_index(index)
            base = 2 + sum(unit[op] * (2 if k >= 3 else 1) for k, op in enumerate(parse_arch(arch)))
            out.writerow([n, arch, 60.0, f"{base:.4f}", f"{3 * base ** 0.8:.4f}", f"{base * 0.7 + 4:.4f}"])
    proc = subprocess.run([sys.executable, str(BENCH / "adapt.py"), "--data", str(tmp_path / "nb201.csv"),
                           "--quick", "--targets", "phoneA,phoneB", "--models-dir", str(tmp_path / "models"),
                           "--out-dir", str(tmp_path), "--workers", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "adapt.json").read_text())
    assert [t["device"] for t in data["targets"]] == ["phoneA", "phoneB"] and data["budgets"] == [5, 10, 20, 50]
    for target in data["targets"]:
        for entry in target["budgets"].values():
            assert set(entry["spread"]) >= {"adapt", "transfer", "stacked", "mix", "loglinear", "scratch",
                                            "loglinear_measured", "transfer_measured"}
            assert _finite(entry["spread"]["adapt"]["spearman"]) and _finite(entry["random"]["adapt"]["acc_10"])
    # phoneB is an exact power law of phoneA: measured sources give it (almost) exactly from 10 networks
    assert data["targets"][1]["budgets"]["10"]["spread"]["transfer_measured"]["acc_10"] > 0.95
