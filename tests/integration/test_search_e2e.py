"""``fleetmeter search`` on a real fleet: a real controller (local Ray, SQLite) with two real agents (onnxruntime and
LiteRT), latency predictors trained on networks those agents measured, a search under budgets on both platforms
at once, and its finalists verified by real sweeps; then the CLI, resumed from its study file.

The fleet is this module's own (it trains predictors on the agents' platforms, which the session's shared fleet
must not get). The logic with known answers (optimum, interval rule, a broken budget, resume) is
tests/unit/test_hwsearch.py.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("optuna")

from fleetmeter.frames import fetch_result_rows  # noqa: E402
from fleetmeter.hwsearch import SweepMeasure, ZooSpace, parse_budget, search  # noqa: E402
from fleetmeter.v1 import common_pb2  # noqa: E402

from _support import e2e_fleet  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.integration

FAMILY = "mobilenetv2"
FIXED = {"input_size": 32, "num_classes": 10}
SETTINGS = common_pb2.BenchSettings(warmup_runs=1, min_runs=5, min_duration_ms=30, max_duration_ms=1000)
#: This module tests the search, not the interference guard: on a busy test host every window would be flagged
#: "disturbed" (and re-run, and kept out of training), so the guard's limits are wide open here.
READING = common_pb2.ReadingSettings(sessions=1, max_other_cpu_cores=1e6, max_steal_share=1.0,
                                     max_probe_slowdown=1e6, max_speed_wait_s=0.0, max_session_spread=1e6)
TRAINING_NETWORKS = 12


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with e2e_fleet(tmp_path_factory.mktemp("search-fleet")) as f:
        yield f


@pytest.fixture(scope="module")
def trained(fleet):
    """Both agents' platforms, each with a latency predictor trained on 12 networks of the family they measured;
    the budgets: the median of each platform's measured latencies (so that some candidates fit and some not)."""
    import optuna

    space = ZooSpace(FAMILY, FIXED)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    networks = {}
    while len(networks) < TRAINING_NETWORKS:
        c = space.suggest(study.ask())
        networks.setdefault(c.key, c)
    with fleet.client() as c:
        platforms = {d.name: d.platform_ids[0] for d in c.list_devices()}
        ids = [platforms["ort"], platforms["lite"]]
        loose = [parse_budget(f"{p}:latency_ms<=1e9") for p in ids]
        measured = SweepMeasure(c, SETTINGS, reading=READING)(list(networks.values()), loose)
        results = list(c.train(ids, ["latency_ms"], skip_family_split=True, min_samples=10, timeout_s=600))[-1].results
    assert sorted(r.platform for r in results if r.version) == sorted(ids), \
        f"{[(r.platform, r.skipped) for r in results]}; measured {measured}"
    limits = {p: statistics.median(m[f"latency_ms@{p}"] for m in measured) for p in ids}
    return {"platforms": ids, "limits": limits}


def test_search_verifies_its_finalists_by_real_sweeps(fleet, trained):
    """A first search with budgets nothing exceeds gives the candidates' predictions; budgets set at one
    candidate's upper ends then split them (10 trials: all from TPE's random start-up, so both searches see the
    same candidates). Fails if the second search calls a candidate feasible whose interval crosses a budget or
    the other way round, if what it recorded is not what the controller predicts for that file, if a verified
    candidate's measured value is not a reading the fleet made of that file, if 'held' disagrees with measured
    vs budget, or if verification does not stop at 2 passes (or when the candidates run out)."""
    platforms = trained["platforms"]
    space = ZooSpace(FAMILY, FIXED)
    with fleet.client() as c:
        loose = search(space, "params", [f"{p}:latency_ms<=1e9" for p in platforms], client=c, trials=10, seed=1,
                       batch=5, pareto=True)
        names = [f"latency_ms@{p}" for p in platforms]
        ranked = sorted(loose["points"], key=lambda q: q["compared"][names[0]])
        pivot = ranked[len(ranked) // 2]
        limits = {p: pivot["compared"][n] for p, n in zip(platforms, names)}
        r = search(space, "params", [f"{p}:latency_ms<={limits[p]!r}" for p in platforms], client=c, trials=10,
                   verify=2, seed=1, batch=5, pareto=True, measure=SweepMeasure(c, SETTINGS, reading=READING))
        assert r["trials"] == 10 and {q["key"] for q in r["points"]} == {q["key"] for q in loose["points"]}
        for q in r["points"]:
            assert all(q["compared"][n] == q["predicted"][n]["upper"] for n in names), "risk 0: the upper end"
            assert q["feasible"] == all(q["compared"][n] <= limits[p] for p, n in zip(platforms, names)), q
        assert 0 < r["feasible"] < r["candidates"], "the pivot fits, the one with the largest upper end does not"
        best = r["best"]
        again = c.predict(space.candidate(best["params"]).model(), platforms, "latency_ms")
        assert len(again) == 2
        for p in again:
            recorded = best["predicted"][f"latency_ms@{p.platform}"]
            assert recorded["value"] == pytest.approx(p.value, rel=1e-9)
            assert (recorded["lower"], recorded["upper"]) == (p.lower, p.upper)
        rows = fetch_result_rows(c)
    passed = [v for v in r["verified"] if v["passed"]]
    assert len(passed) == 2 or len(r["verified"]) == r["feasible"]
    assert r["pick"] == (passed[0] if passed else None)
    assert r["measurements_used"] == 2 * len(r["verified"])
    for v in r["verified"]:
        cand = space.candidate(v["params"])
        shas = {"onnxruntime": _sha(cand.model("onnx")), "litert": _sha(cand.model("tflite"))}
        for b in r["budgets"]:
            n = b["name"]
            made = [row for row in rows if row["platform"] == b["platform"] and not row["failure_kind"]
                    and row["model_sha256"] == shas[row["runtime"]]]
            clean = [row for row in made if "disturbed" not in row["flags"]] or made
            assert clean and v["measured"][n] == pytest.approx(statistics.median(row["median_ms"] for row in clean))
            assert v["held"][n] == (v["measured"][n] <= b["limit"])
        assert v["passed"] == all(v["held"].values())


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _cli(fleet, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", "search", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**fleet.env(), "FLEETMETER_CONTROLLER": fleet.address})


def test_cli_search_resumes_from_its_study_file(fleet, trained, tmp_path):
    ort = trained["platforms"][0]
    common = ["--space", FAMILY, "--objective", "params", "--fix", "input_size=32", "--fix", "num_classes=10",
              "--budget", f"{ort}:latency_ms<={trained['limits'][ort]!r}", "--storage", "study.db", "--pareto",
              "--json"]
    first = _cli(fleet, *common, "--trials", "4", cwd=tmp_path)
    assert first.returncode in (0, 1), first.stderr
    assert "search: 4/4 trials" in first.stderr
    stopped = json.loads(first.stdout)
    resumed_run = _cli(fleet, *common, "--trials", "7", cwd=tmp_path)
    assert "resuming study 'fleetmeter-search': 4 trial(s) done" in resumed_run.stderr, resumed_run.stderr
    resumed = json.loads(resumed_run.stdout)
    assert stopped["trials"] == 4 and resumed["trials"] == 7
    assert {p["key"] for p in stopped["points"]} <= {p["key"] for p in resumed["points"]}
    front = resumed["pareto"][f"latency_ms@{ort}"]
    assert front and all(a["compared"][f"latency_ms@{ort}"] <= b["compared"][f"latency_ms@{ort}"] and
                         a["objective"] < b["objective"] for a, b in zip(front, front[1:]))

    bad = _cli(fleet, "--space", FAMILY, "--objective", "params", "--budget", f"{ort}:speed<=3", cwd=tmp_path)
    assert bad.returncode == 1 and "unknown target 'speed'" in bad.stderr


def test_report_draws_the_search_in_chromium(fleet, trained, tmp_path):
    """``fleetmeter report --search RESULT.json``: the search's section is drawn (not blank, no error, offline)."""
    from test_report import MIN_COLOURED_PIXELS, _chromium, open_in_chromium  # the browser test's helpers

    chromium = _chromium()
    ort = trained["platforms"][0]
    run = _cli(fleet, "--space", FAMILY, "--objective", "macs", "--fix", "input_size=32", "--fix", "num_classes=10",
               "--budget", f"{ort}:latency_ms<={trained['limits'][ort]!r}", "--trials", "6", "--pareto", "--json",
               cwd=tmp_path)
    assert run.returncode in (0, 1), run.stderr
    (tmp_path / "result.json").write_text(run.stdout)
    page = tmp_path / "page.html"
    proc = subprocess.run([sys.executable, "-m", "fleetmeter.cli", "report", "--out", str(page), "--search",
                           str(tmp_path / "result.json"), "--controller", fleet.address, "--api-token",
                           fleet.api_token], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = open_in_chromium(page, chromium)
    assert seen["errors"] == [] and seen["requests"] == [], seen
    assert seen["coloured"]["fig-search"] >= MIN_COLOURED_PIXELS
