"""The CLI side of "readings you can trust": sweep files and flags for the reading settings and repeat
samples; ``results`` rows, ``platforms --json`` and ``eval`` built from proto messages (no controller needed).
"""
from __future__ import annotations

import argparse
import csv
import io
import json

import pytest

from fleetmeter import cli, frames, predict_cli
from fleetmeter.errors import InvalidArgument
from fleetmeter.sweepspec import add_sweep_arguments, load_sweep_file, spec_from_args
from fleetmeter.v1 import common_pb2, fleet_pb2, predictor_pb2

from _support import assert_sweep_file_problems  # tests/ is on sys.path


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    return parser.parse_args(list(argv))


# ------------------------------------------------------------------ sweep file and flags

def test_reading_and_repeat_sample_from_file_and_flags(tmp_path):
    """Fails if the file's reading settings or repeat share do not reach the SweepSpec, or a flag does not
    override the file."""
    path = tmp_path / "s.yaml"
    path.write_text("models: [aaaaaaaa]\n"
                    "reading: {sessions: 3, max_sessions: 5, max_session_spread: 0.04, max_other_cpu_cores: 0.5,\n"
                    "          max_steal_share: 0.1, max_disturbed_reruns: 1, isolate: false,\n"
                    "          session_min_duration_ms: 150}\n"
                    "repeat_sample: 0.2\n")
    spec = spec_from_args(_args(str(path)))
    r = spec.reading
    assert (r.sessions, r.max_sessions, r.max_session_spread, r.max_other_cpu_cores, r.max_steal_share,
            r.max_disturbed_reruns, r.isolate, r.session_min_duration_ms) == (3, 5, 0.04, 0.5, 0.1, 1, False, 150)
    assert r.HasField("isolate") and spec.repeat_sample == pytest.approx(0.2)
    spec = spec_from_args(_args(str(path), "--sessions", "1", "--max-session-spread", "0.2",
                                "--repeat-sample", "-1"))
    assert (spec.reading.sessions, spec.reading.max_session_spread, spec.repeat_sample) == (1, 0.2, -1.0)
    assert spec.reading.max_sessions == 5, "flags override only what they name"


def test_no_reading_settings_leave_every_field_unset():
    """Fails if an omitted setting travels as an explicit 0 (0 sessions) instead of "the agent's default"."""
    spec = spec_from_args(_args("--model", "aaaaaaaa"))
    assert not any(spec.reading.HasField(f.name) for f in common_pb2.ReadingSettings.DESCRIPTOR.fields)
    assert spec.repeat_sample == 0.0


def test_reading_problems_name_line_and_field(tmp_path):
    """Fails if a bad reading setting or repeat share is accepted or reported without its line and field."""
    path = tmp_path / "bad.yaml"
    assert_sweep_file_problems(path, "models: [a]\n"                # 1
                                     "reading:\n"                   # 2
                                     "  sessions: 0\n"              # 3
                                     "  isolate: maybe\n"           # 4
                                     "  max_steal_share: 2\n"       # 5
                                     "  sesions: 3\n"               # 6
                                     "repeat_sample: 1.5\n",        # 7
                               (f"{path}:3: reading.sessions: must be >= 1",
                                f"{path}:4: reading.isolate: expected true or false",
                                f"{path}:5: reading.max_steal_share: a share: must be <= 1",
                                f"{path}:6: reading.sesions: unknown setting",
                                f"{path}:7: repeat_sample: a share of the pairs"))
    path.write_text("models: [a]\nreading: 3\nrepeat_sample: lots\n")
    with pytest.raises(InvalidArgument) as err:
        load_sweep_file(path)
    assert f"{path}:2: reading: expected a mapping" in str(err.value)
    assert f"{path}:3: repeat_sample: expected a number" in str(err.value)


# ------------------------------------------------------------------ results

def _measurement(measurement_id: str = "m1", **kw) -> common_pb2.Measurement:
    m = common_pb2.Measurement(measurement_id=measurement_id, platform_id="p", model_sha256="ab" * 32, runtime="onnxruntime",
                               threads=1, latency_ms=common_pb2.LatencySummary(median=2.0, p90=2.5, n=10),
                               sweep_id="sw-1", **kw)
    return m


def test_result_rows_carry_sessions_spread_interference_flags_and_kind():
    """Fails if a reading's trust figures are missing from results, or a figure the device could not read is
    shown as 0 (it must be null / empty)."""
    m = _measurement(session_spread=0.03, flags=["unstable"], job_kind="repeat_sample",
                     interference=common_pb2.Interference(window_s=2.0, other_cpu_cores=0.4, disturbed=True,
                                                          reasons=["other_cpu_cores 0.40 > 0.25", "x"]))
    m.sessions.add(index=0, median_ms=2.0, accepted=True)
    m.sessions.add(index=1, median_ms=2.06, accepted=True)
    m.sessions.add(index=2, median_ms=3.0, accepted=False)
    single = _measurement(measurement_id="m2", session_spread=0.0)
    single.sessions.add(index=0, median_ms=2.0, accepted=True)
    old = _measurement(measurement_id="m3")
    rows = frames.result_rows([m, single, old], [fleet_pb2.Model(sha256="ab" * 32, name="net")])
    r, s, o = rows
    assert (r["sessions"], r["sessions_run"], r["session_spread"], r["flags"], r["job_kind"]) == \
        (2, 3, 0.03, ["unstable"], "repeat_sample"), "sessions counts what the reading aggregates, not re-runs"
    assert r["interference"]["other_cpu_cores"] == 0.4 and r["interference"]["steal_share"] is None
    assert r["interference"]["reasons"] == ["other_cpu_cores 0.40 > 0.25", "x"]
    assert (s["sessions"], s["session_spread"]) == (1, None), "one session has no spread"
    assert (o["sessions"], o["session_spread"], o["interference"], o["flags"], o["job_kind"]) == (0, None, None, [], "")
    assert r["median_ms"] == 2.0 and r["model"] == "net", "existing columns keep their meaning"
    json.dumps(rows)  # the json output prints these rows as they are


def test_results_csv_flattens_interference_and_joins_flags(monkeypatch, capsys):
    """Fails if the csv loses a column that was there before, or the new figures are not plain cells."""
    m = _measurement(session_spread=0.03, flags=["unstable", "disturbed"], job_kind="reference",
                     interference=common_pb2.Interference(window_s=2.0, steal_share=0.01, reasons=["a", "b"]))
    m.sessions.add(index=0, median_ms=2.0, accepted=True)
    m.sessions.add(index=1, median_ms=2.06, accepted=True)

    class FakeClient:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def list_measurements(self, **kw):
            return [m]

        def list_models(self):
            return []

    monkeypatch.setattr(cli, "_client", lambda args: FakeClient())
    args = argparse.Namespace(json=False, format="csv", sweep=None, platform=None, samples=False)
    assert cli.cmd_results(args) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    old_columns = ("model", "model_sha256", "platform", "runtime", "threads", "median_ms", "mean_ms", "p90_ms",
                   "p99_ms", "std_ms", "n", "load_ms", "first_run_ms", "peak_rss_bytes", "energy_mj_per_inference",
                   "avg_power_w", "failure_kind", "failure_message", "sweep_id", "measurement_id")
    assert list(row)[:len(old_columns)] == list(old_columns)
    assert (row["sessions"], row["session_spread"], row["flags"], row["job_kind"]) == \
        ("2", "0.03", "unstable;disturbed", "reference")
    assert (row["interference_steal_share"], row["interference_other_cpu_cores"], row["interference_reasons"]) == \
        ("0.01", "", "a;b")
    args.format = "table"
    assert cli.cmd_results(args) == 0
    table = capsys.readouterr().out
    assert "SPREAD" in table and "FLAGS" in table and "unstable;disturbed" in table and "3.0%" in table


# ------------------------------------------------------------------ platforms and eval

def _platform(pairs: int = 0, reference: bool = False) -> fleet_pb2.Platform:
    p = fleet_pb2.Platform(platform_id="p1", hardware="cpu", runtime="onnxruntime", threads=1,
                           noise_ceiling=fleet_pb2.NoiseCeiling(within_5=0.75 if pairs else 0.0,
                                                                within_10=1.0 if pairs else 0.0, pairs=pairs))
    if reference:
        p.reference.CopyFrom(fleet_pb2.ReferenceReading(model_sha256="cd" * 32, model_name="reference-onnx",
                                                        median_ms=1.25, session_spread=0.01, flags=["disturbed"],
                                                        finished_at_unix=5.0, readings=4, drift=-0.02))
    return p


def test_platform_noise_ceiling_and_reference_dicts():
    """Fails if platforms --json shows 0 % agreement for a platform that simply has no repeat pair yet, or
    shows a reference reading that does not exist."""
    assert cli.noise_ceiling_dict(_platform()) == {"within_5": None, "within_10": None, "pairs": 0}
    assert cli.reference_dict(_platform()) is None
    assert cli.noise_ceiling_dict(_platform(pairs=6)) == {"within_5": 0.75, "within_10": 1.0, "pairs": 6}
    ref = cli.reference_dict(_platform(reference=True))
    assert ref == {"model_sha256": "cd" * 32, "model_name": "reference-onnx", "median_ms": 1.25,
                   "session_spread": 0.01, "flags": ["disturbed"], "finished_at_unix": 5.0, "readings": 4,
                   "drift": -0.02}


def test_eval_rows_show_the_live_ceiling_next_to_the_training_one():
    """Fails if eval loses the ceiling recorded at training, or does not add the platform's live one."""
    metrics = {"noise_ceiling": {"share_within_5": 0.5, "share_within_10": 0.9, "n_models": 3, "n_pairs": 3},
               "random_split": {"predictor": {"acc_5": 0.4, "acc_10": 0.8}}}
    info = predictor_pb2.PredictorInfo(platform="p1", target="latency_ms", version=1,
                                       metrics_json=json.dumps(metrics))
    (row,) = predict_cli.eval_rows([info], "random", [_platform(pairs=6)])
    assert row["noise_ceiling"]["share_within_5"] == 0.5
    assert row["noise_ceiling_live"] == {"within_5": 0.75, "within_10": 1.0, "pairs": 6}
    (row,) = predict_cli.eval_rows([info], "random")
    assert row["noise_ceiling_live"] is None


def test_every_reading_setting_of_the_proto_is_accepted_by_file_and_controller(tmp_path):
    """Fails if a ReadingSettings field (the agent side adds them) is refused as unknown by the sweep file or by
    the controller's validation, so a user could not set it."""
    from fleetmeter.controller.quality import validate_reading

    values = {f.name: True if f.type == f.TYPE_BOOL else 1 for f in common_pb2.ReadingSettings.DESCRIPTOR.fields}
    validate_reading(values)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"models": ["aaaaaaaa"], "reading": values}))
    spec = spec_from_args(_args(str(path)))
    assert all(spec.reading.HasField(name) for name in values)
