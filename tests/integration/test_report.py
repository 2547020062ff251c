"""``fleetmeter report`` and ``fleetmeter demo --report`` on real runs, opened in a real headless Chromium.

A real controller and real agents measure zoo models (onnxruntime and LiteRT), the controller trains a
predictor for the onnxruntime platform, and the CLI writes the page. Chromium (Debian's, driven by
playwright; no browser is downloaded) loads it with every request to the network refused: the page must
log no console error, every plot must render, and each plot's screenshot must show data (coloured pixels:
the page's text and grid are grey, so colour is what the traces draw), which an empty plot drawn in the
same page as a control does not.

Needs chromium and playwright: skipped without them, unless ``FLEETMETER_REQUIRE_BROWSER=1`` (CI sets it),
which makes a missing browser a failure.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("plotly")
pytest.importorskip("lightgbm")

from fleetmeter.local_fleet import wait_until  # noqa: E402
from fleetmeter.modeler.zoo.families import SMALL_FIXED, derive_seed, get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from fleetmeter.report import outside_references  # noqa: E402
from fleetmeter.v1 import common_pb2, fleet_pb2  # noqa: E402

from _support import e2e_fleet, open_guard_reading  # noqa: E402  (tests/ is on sys.path)

#: A real sweep and a training run on a shared 2-core host can outlast the suite's 300 s default.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SETTINGS = common_pb2.BenchSettings(warmup_runs=2, min_runs=5, min_duration_ms=40, max_duration_ms=1500)
#: This module tests the page, not the interference guard: its limits are wide open here.
READING = open_guard_reading()
FAMILIES = ("resnet", "mobilenetv2", "vgg")
PER_FAMILY = 4
#: A pixel is "coloured" when its channels differ by more than this (grey text, axes and grid do not).
CHROMA = 30
#: Coloured pixels a plot must show to count as drawn (two markers of the drift plot are ~200).
MIN_COLOURED_PIXELS = 100
FIGURES = ("latency", "samples", "predicted", "accuracy", "noise", "drift", "fleet")


def _chromium() -> str:
    """The Debian chromium's path; skip (fail under FLEETMETER_REQUIRE_BROWSER=1) when it or playwright is missing."""
    missing = []
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        missing.append("chromium (apt-get install chromium)")
    for module, hint in (("playwright.sync_api", "pip install playwright; never `playwright install`"),
                         ("PIL", "pip install Pillow")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} ({hint})")
    if missing:
        message = "the browser test needs " + ", ".join(missing)
        if os.environ.get("FLEETMETER_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (FLEETMETER_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return path


def coloured_pixels(png: bytes) -> int:
    """How many of the image's pixels have channels that differ by more than CHROMA (not white or grey)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    return int((chroma > CHROMA).sum())


BLANK_CONTROL = """() => { const d = document.createElement('div'); d.id = 'blank-control';
  d.style.width = '1000px'; document.body.appendChild(d);
  return Plotly.newPlot(d, [], {height: 400, template: document.getElementById('fig-fleet')._fullLayout.template,
                                font: {color: '#222222'}, xaxis: {title: {text: 'x'}}, yaxis: {title: {text: 'y'}}})
    .then(() => null); }"""
ALL_DRAWN = """() => [...document.querySelectorAll('.plotly-graph-div')]
  .every(d => d._fullLayout && d.querySelector('.main-svg'))"""


def open_in_chromium(path: Path, chromium: str) -> dict:
    """Load the page (network refused) and return ``errors`` (console errors, page errors), ``requests``
    (addresses it tried to reach beyond the file) and ``coloured``: each plot div's coloured pixels, plus
    the blank control's under ``"blank-control"``."""
    from playwright.sync_api import sync_playwright

    errors, requests = [], []

    def route(r):
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.route("**/*", route)
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function(ALL_DRAWN, timeout=60_000)
            ids = page.eval_on_selector_all(".plotly-graph-div", "els => els.map(e => e.id)")
            page.evaluate(BLANK_CONTROL)
            shots = {i: coloured_pixels(page.locator(f"#{i}").screenshot()) for i in ids + ["blank-control"]}
        finally:
            browser.close()
    return {"errors": errors, "requests": requests, "coloured": shots}


def assert_page_renders(path: Path, figures) -> None:
    """The checks both tests make: offline page, no errors, exactly ``figures`` drawn and not blank."""
    page = path.read_text(encoding="utf-8")
    assert outside_references(page) == [], "the page must open with no network"
    seen = open_in_chromium(path, _chromium())
    assert seen["errors"] == [], seen["errors"]
    assert seen["requests"] == [], f"the page tried to reach the network: {seen['requests']}"
    coloured = seen["coloured"]
    assert coloured.pop("blank-control") < MIN_COLOURED_PIXELS, "the check must see an empty plot as blank"
    assert sorted(coloured) == sorted(f"fig-{k}" for k in figures)
    blank = {k: v for k, v in coloured.items() if v < MIN_COLOURED_PIXELS}
    assert not blank, f"plots that drew nothing (coloured pixels): {blank}"


# ------------------------------------------------------------------ a real run with a trained predictor
@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """This module's own controller and agents (it trains: fleet-wide state)."""
    with e2e_fleet(tmp_path_factory.mktemp("report-fleet")) as f:
        yield f


def _arch(family: str, index: int):
    """Model ``index`` of ``family`` at the zoo's small fixed sizes (its other hyperparameters sampled)."""
    return get_family(family).sample(derive_seed(11, family, index), name=f"{family}-{index}", **SMALL_FIXED[family])


@pytest.fixture(scope="module")
def run(fleet, tmp_path_factory):
    """12 zoo models measured on the onnxruntime platform, 3 on LiteRT, with repeat samples; a latency
    predictor trained for the onnxruntime platform only."""
    root = tmp_path_factory.mktemp("report-models")
    onnx, tflite = [], []
    for family in FAMILIES:
        for i in range(PER_FAMILY):
            (root / f"{family}-{i}.onnx").write_bytes(onnx_bytes(build_onnx(_arch(family, i), seed=i)))
            onnx.append(root / f"{family}-{i}.onnx")
        (root / f"{family}.tflite").write_bytes(build_tflite(_arch(family, 0), seed=0))
        tflite.append(root / f"{family}.tflite")
    with fleet.client() as c:
        devices = {d.name: d for d in c.list_devices()}
        ort, lite = devices["ort"].platform_ids[0], devices["lite"].platform_ids[0]
        sweeps = [c.submit_sweep(fleet_pb2.SweepSpec(
            models=[c.upload_model(p).model.sha256 for p in paths], settings=SETTINGS, reading=READING,
            repeat_sample=0.34, platforms=fleet_pb2.PlatformSelector(platform_ids=[pid])))
            for paths, pid in ((onnx, ort), (tflite, lite))]
        for sweep in sweeps:  # polled, not watched: a WatchSweep quiet for minutes can get a GOAWAY under load
            wait_until(lambda: _ended(c.get_sweep(sweep.sweep_id).progress), 900, f"sweep {sweep.sweep_id}", 1.0)
        trained = list(c.train([ort], ["latency_ms"], min_samples=6, skip_family_split=True, timeout_s=600))
    results = [r for r in trained[-1].results if r.platform == ort]
    assert results and results[0].version, f"the onnxruntime platform's predictor was not trained: {results}"
    return {"ort": ort, "lite": lite, "sweeps": [s.sweep_id for s in sweeps]}


def _ended(progress) -> bool:
    return progress.state in ("done", "cancelled") and progress.leased == 0


def _report(fleet, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", "report", "--out", str(out), *args,
                           "--controller", fleet.address, "--api-token", fleet.api_token],
                          capture_output=True, text=True, timeout=300)


def test_report_of_a_real_run_renders_every_plot_in_chromium(fleet, run, tmp_path):
    """Fails if a figure is missing, draws nothing or errs in the browser, or the page needs the network."""
    _chromium()  # skip early (before the report) when there is no browser
    out = tmp_path / "report.html"
    proc = _report(fleet, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reading the measurements" in proc.stderr, "progress goes to stderr"
    page = out.read_text(encoding="utf-8")
    assert f"no predictor trained for {run['lite']}" in page, "an untrained platform is a note, not a plot"
    assert_page_renders(out, FIGURES)


def test_report_of_one_sweep_and_platform(fleet, run, tmp_path):
    """--sweep and --platform narrow the readings to one platform; an unknown platform is refused by name."""
    out = tmp_path / "lite.html"
    proc = _report(fleet, out, "--sweep", run["sweeps"][1], "--platform", run["lite"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 1 platform(s), 0 predictor(s)" in proc.stdout
    page = out.read_text(encoding="utf-8")
    assert run["ort"] not in page.split('id="fleet"')[0], "only the lite platform above the fleet table"
    proc = _report(fleet, tmp_path / "bad.html", "--platform", "no-such-platform")
    assert proc.returncode == 1 and "--platform 'no-such-platform'" in proc.stderr
    assert not (tmp_path / "bad.html").exists()


# ------------------------------------------------------------------ the demo's report
def test_demo_report_renders_in_chromium(tmp_path):
    """``fleetmeter demo --report`` writes the page while its controller is up; the demo trains no predictor
    and takes no repeat samples, so those figures are notes saying why."""
    _chromium()
    out = tmp_path / "demo.html"
    proc = subprocess.run([sys.executable, "-m", "fleetmeter.cli", "demo", "--json", "--min-duration-ms", "50",
                           "--data-dir", str(tmp_path / "demo"), "--report", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if not k.startswith("FLEETMETER_")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    platforms = {r["platform"] for r in json.loads(proc.stdout)}  # --json output stays clean with --report
    page = out.read_text(encoding="utf-8")
    assert len(platforms) == 3
    for pid in platforms:
        assert f"no predictor trained for {pid} (" in page and f"no repeat pair yet on {pid} (" in page
    assert_page_renders(out, ("latency", "samples", "drift", "fleet"))
