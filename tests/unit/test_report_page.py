"""``fleetmeter report`` from constructed controller answers (no network): what each figure draws comes
from the readings and predictions given, what is missing becomes a note, and the page needs no network.
The real run in a real browser is tests/integration/test_report.py."""
from __future__ import annotations

import json
import math
import statistics
import sys

import pytest

pytest.importorskip("plotly")

from fleetmeter import cli, report  # noqa: E402
from fleetmeter.client import Prediction  # noqa: E402
from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound  # noqa: E402
from fleetmeter.v1 import common_pb2, fleet_pb2, predictor_pb2  # noqa: E402

ORT = "xeon-4c-abc123/onnxruntime-1.20/CPUExecutionProvider/t1"
LITE = "xeon-4c-abc123/litert-1.0/cpu/t1"
T0 = 1_700_000_000.0


def _reading(mid, platform, sha, samples, agent="a-ort", kind="", failure="", finished=T0, sweep="s1"):
    m = common_pb2.Measurement(measurement_id=mid, platform_id=platform, model_sha256=sha, agent_id=agent,
                               job_kind=kind, failure_kind=failure, finished_at_unix=finished, sweep_id=sweep,
                               samples_ms=[] if failure else samples)
    if not failure:
        m.latency_ms.median = statistics.median(samples)
        m.latency_ms.n = len(samples)
    return m


class FakeClient:
    """The Client calls the report makes, answered from lists (as the controller would)."""

    address = "127.0.0.1:1"

    def __init__(self):
        self.platforms = [
            fleet_pb2.Platform(platform_id=ORT, noise_ceiling=fleet_pb2.NoiseCeiling(within_5=0.5, within_10=1.0,
                                                                                      pairs=2)),
            fleet_pb2.Platform(platform_id=LITE)]
        self.models = [fleet_pb2.Model(sha256=c * 64, name=f"m{c}.onnx") for c in "abc"] + [
            fleet_pb2.Model(sha256="d" * 64, name="md.tflite")]
        self.measurements = [
            _reading("r1", ORT, "a" * 64, [1.0, 1.2, 1.1]), _reading("r2", ORT, "a" * 64, [1.4, 1.3, 1.5],
                                                                      kind="repeat_sample"),
            _reading("r3", ORT, "b" * 64, [float(v) for v in range(10, 1010)]),
            _reading("r4", ORT, "c" * 64, [], failure="unsupported_op"),
            _reading("r5", LITE, "d" * 64, [3.0, 3.3], agent="a-lite"),
            _reading("ref1", ORT, "e" * 64, [2.0, 2.0], kind="reference", finished=T0 - 60, sweep="ref-x"),
            _reading("ref2", ORT, "e" * 64, [2.2, 2.2], kind="reference", finished=T0 + 60, sweep="ref-x")]
        metrics = {"random_split": {"n_train": 8, "n_test": 2, "predictor": {"acc_10": 0.75},
                                    "flops_linear": {"acc_10": 0.25}, "opcount_lgbm": {"acc_10": None}},
                   "noise_ceiling": {"share_within_10": 0.9}, "served": {"method": "lgbm"}}
        self.predictors = [predictor_pb2.PredictorInfo(platform=ORT, target="latency_ms", version=1,
                                                       metrics_json=json.dumps(metrics), method="lgbm")]
        self.devices = [fleet_pb2.Device(agent_id="a-ort", name="ort", state="idle", last_seen_unix=T0,
                                         platform_ids=[ORT]),
                        fleet_pb2.Device(agent_id="a-lite", name="lite", state="offline", platform_ids=[LITE])]
        self.predicted = {"a" * 64: 1.05 * 1.25, "b" * 64: 2 * 509.5}  # within ±10 %, twice

    def get_sweep(self, sweep_id):
        if sweep_id != "s1":
            raise NotFound(f"no sweep {sweep_id}")
        return fleet_pb2.Sweep(sweep_id="s1", platform_ids=[ORT, LITE])

    def list_platforms(self):
        return self.platforms

    def list_devices(self):
        return self.devices

    def list_models(self):
        return self.models

    def list_measurements(self, sweep_id="", platform_id="", model_sha256="", include_samples=False):
        out = [m for m in self.measurements if not sweep_id or m.sweep_id == sweep_id]
        if not include_samples:
            out = [common_pb2.Measurement(**{**{f.name: getattr(m, f.name) for f in (
                m.DESCRIPTOR.fields_by_name[n] for n in ("measurement_id", "platform_id", "model_sha256",
                                                          "agent_id", "job_kind", "failure_kind",
                                                          "finished_at_unix", "sweep_id"))},
                                              "latency_ms": m.latency_ms}) for m in out]
        return out

    def list_predictors(self, platforms=None, targets=None):
        return [p for p in self.predictors if not targets or p.target in targets]

    def predict_sha256(self, sha256, platforms=None, targets=("latency_ms",), *, shapes=None):
        value = self.predicted[sha256]
        return [Prediction(platform=p, target="latency_ms", value=value, lower=0.8 * value, upper=1.3 * value,
                           unit="ms", predictor_version=1, interval_level=0.8, method="lgbm") for p in platforms]


@pytest.fixture()
def data():
    return report.collect(FakeClient(), say=None)


def _sections(data):
    go = report.require_plotly()
    return {s.key: s for s in (make(data, go) for make in report.SECTIONS)}


def test_heatmap_cells_are_the_median_of_each_models_readings(data):
    """Fails if a cell is not the median of the model's readings' medians (repeats included), or a failed
    pair is drawn as a number instead of saying it failed."""
    s = _sections(data)["latency"]
    (heat,) = s.figure.data
    cells = {(y, x): (z, t) for y, zrow, trow in zip(heat.y, heat.z, heat.text) for x, z, t in zip(heat.x, zrow, trow)}
    ort, lite = report._tick(ORT), report._tick(LITE)
    assert cells[("ma.onnx", ort)][0] == pytest.approx(math.log10(statistics.median([1.1, 1.4])))
    assert cells[("mb.onnx", ort)][0] == pytest.approx(math.log10(509.5))
    assert cells[("mc.onnx", ort)] == (None, "failed: unsupported_op")
    assert cells[("md.tflite", lite)][0] == pytest.approx(math.log10(3.15))
    assert cells[("ma.onnx", lite)] == (None, "")


def test_one_box_per_reading_and_long_ones_are_thinned(data):
    s = _sections(data)["samples"]
    ort_box = next(t for t in s.figure.data if t.name == ORT)
    labels = list(dict.fromkeys(ort_box.x))
    assert labels == ["ma.onnx", "ma.onnx (2)", "mb.onnx"], "each reading its own box; no failed reading"
    kept = [y for x, y in zip(ort_box.x, ort_box.y) if x == "mb.onnx"]
    assert 0 < len(kept) <= report.MAX_SAMPLES_PER_READING and min(kept) == 10.0
    assert any(str(report.MAX_SAMPLES_PER_READING) in n for n in s.notes)


def test_predicted_vs_measured_uses_the_served_predictions_and_notes_the_untrained_platform(data):
    s = _sections(data)["predicted"]
    points = next(t for t in s.figure.data if t.mode == "markers")
    assert sorted(zip(points.x, points.y)) == pytest.approx(sorted([(1.25, 1.3125), (509.5, 1019.0)]))
    assert list(points.error_y.array) == pytest.approx([0.3 * 1.3125, 0.3 * 1019.0])
    assert list(points.error_y.arrayminus) == pytest.approx([0.2 * 1.3125, 0.2 * 1019.0])
    band = [t for t in s.figure.data if t.mode == "lines"]
    assert sorted(round(t.y[0] / t.x[0], 6) for t in band) == [0.9, 1.0, 1.1]
    assert f"no predictor trained for {LITE} (`fleetmeter train`)" in s.notes
    assert "1/2 within ±10%" in s.figure.layout.annotations[0].text


def test_accuracy_noise_drift_and_fleet_come_from_the_controllers_numbers(data):
    s = _sections(data)
    bars = {t.name: list(t.y) for t in s["accuracy"].figure.data if t.type == "bar"}
    assert bars["LightGBM on graph features (lgbm)"] == [75.0] and bars["baseline: FLOPs linear"] == [25.0]
    assert "baseline: op-count LightGBM" not in bars, "a method without a number draws no bar"
    assert any("leave-one-family-out" in n for n in s["accuracy"].notes)
    noise = {t.name: list(t.y) for t in s["noise"].figure.data}
    assert noise == {"within ±5 %": [50.0], "within ±10 %": [100.0]}
    assert any(LITE in n and "no repeat pair" in n for n in s["noise"].notes)
    (drift,) = s["drift"].figure.data
    assert list(drift.y) == pytest.approx([100 * (2.0 / 2.1 - 1), 100 * (2.2 / 2.1 - 1)])
    assert any(LITE in n and "no reference reading" in n for n in s["drift"].notes)
    table = s["fleet"].figure.data[0].cells.values
    assert list(table[0]) == ["lite", "ort"] and list(table[4]) == ["1", "5"] and list(table[5]) == ["0", "1"]


def test_page_opens_offline_with_plotly_inlined_once(data, tmp_path):
    from plotly.offline import get_plotlyjs

    page = report.build_html(data)
    assert page.count(get_plotlyjs()) == 1
    assert all(f'id="fig-{key}"' in page for key in ("latency", "samples", "predicted", "accuracy", "noise",
                                                      "drift", "fleet"))
    assert report.outside_references(page) == []


def test_outside_references_finds_what_needs_the_network():
    page = ('<link href="style.css"><script src="https://cdn.plot.ly/plotly.js"></script>'
            '<img src="//example.com/a.png"><a href="#x">x</a><script>var u = "https://x";</script>')
    assert report.outside_references(page) == ["https://cdn.plot.ly/plotly.js", "//example.com/a.png"]


def test_sweep_and_platform_selection():
    c = FakeClient()
    only_lite = report.collect(c, platforms=["xeon-4c-abc123/lite"], say=None)
    assert [p.platform_id for p in only_lite.platforms] == [LITE] and {r["platform"] for r in only_lite.rows} == {LITE}
    assert only_lite.predictors == [] and only_lite.predictions == {}
    swept = report.collect(c, sweep_id="s1", say=None)
    assert {p.platform_id for p in swept.platforms} == {ORT, LITE}
    assert len(swept.references) == 2, "drift reads every reference reading, not only the sweep's"
    with pytest.raises(InvalidArgument, match="--platform 'xeon'.*2 platforms"):
        report.collect(c, platforms=["xeon"], say=None)
    with pytest.raises(InvalidArgument, match="--platform 'gpu'.*no platform"):
        report.collect(c, platforms=["gpu"], say=None)


def test_a_model_that_cannot_be_predicted_is_a_note():
    c = FakeClient()
    c.predicted = {"a" * 64: 1.0}  # mb: KeyError in the fake → make it a controller error instead

    def predict(sha256, platforms=None, targets=(), *, shapes=None):
        if sha256 == "b" * 64:
            raise NotFound("model has no features")
        return FakeClient.predict_sha256(c, sha256, platforms, targets)

    c.predict_sha256 = predict
    s = _sections(report.collect(c, say=None))["predicted"]
    assert "no prediction for mb.onnx: NotFound: model has no features" in s.notes
    assert len(next(t for t in s.figure.data if t.mode == "markers").x) == 1


def test_without_plotly_the_cli_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # import fails as if not installed
    with pytest.raises(FailedPrecondition, match=r"pip install 'fleetmeter\[report\]'"):
        report.require_plotly()
    assert cli.main(["report", "--out", str(tmp_path / "r.html"), "--controller", "127.0.0.1:9"]) == 1
    assert "fleetmeter[report]" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_out_must_be_a_file_in_an_existing_folder(tmp_path):
    with pytest.raises(InvalidArgument, match="--out .*folder does not exist"):
        report.check_out_path(tmp_path / "missing" / "r.html")
    with pytest.raises(InvalidArgument, match="--out .*is a folder"):
        report.check_out_path(tmp_path)
    assert report.check_out_path(tmp_path / "r.html") == tmp_path / "r.html"


def test_report_flags_as_the_issue_spells_them():
    args = cli.build_parser().parse_args(["report", "--sweep", "sw-1", "--platform", "a", "b", "--platform", "c",
                                          "--out", "r.html"])
    assert (args.sweep, args.platform, args.out, args.func) == ("sw-1", ["a", "b", "c"], "r.html", cli.cmd_report)
    assert cli.build_parser().parse_args(["demo", "--report", "d.html"]).report == "d.html"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["report"])  # --out is required


def test_models_that_share_a_name_keep_their_own_row():
    rows = [{"model_sha256": "a" * 64, "model": "m.onnx"}, {"model_sha256": "b" * 64, "model": "m.onnx"},
            {"model_sha256": "c" * 64, "model": "n.onnx"}]
    assert report.model_labels(rows) == {"a" * 64: "m.onnx [aaaaaaaa]", "b" * 64: "m.onnx [bbbbbbbb]",
                                         "c" * 64: "n.onnx"}
