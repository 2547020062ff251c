"""The result rows' one definition, as JSON, as a DataFrame and as parquet (no network: rows from messages built
here; the same path over real gRPC is tests/integration/test_scripting.py)."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from types import SimpleNamespace

import pytest

from fleetmeter import cli, frames
from fleetmeter._extras import require
from fleetmeter.v1 import common_pb2, fleet_pb2

from _support import json_cell  # tests/ is on sys.path (pyproject: pythonpath)


def _measurement(measurement_id: str, **kw) -> common_pb2.Measurement:
    m = common_pb2.Measurement(measurement_id=measurement_id, platform_id="p", model_sha256="ab" * 32,
                               runtime="onnxruntime", threads=2, sweep_id="sw-1",
                               latency_ms=common_pb2.LatencySummary(median=2.0, mean=2.1, p90=2.5, p99=2.9, std=0.1,
                                                                    n=3), **kw)
    return m


def _measurements() -> list:
    measured = _measurement("m1", samples_ms=[1.9, 2.0, 2.4], flags=["unstable"], session_spread=0.03,
                            energy_mj_per_inference=1.5,
                            interference=common_pb2.Interference(window_s=2.0, other_cpu_cores=0.4, disturbed=True,
                                                                 reasons=["other_cpu_cores 0.40 > 0.25"]))
    measured.sessions.add(index=0, median_ms=2.0, accepted=True)
    measured.sessions.add(index=1, median_ms=2.06, accepted=True)
    failed = _measurement("m2", failure_kind="load_error", failure_message="bad file")
    return [measured, failed]


MODELS = [fleet_pb2.Model(sha256="ab" * 32, name="net.onnx")]


def test_result_keys_are_the_rows_keys():
    """Fails if the frame's column list and the JSON rows' keys could drift apart."""
    rows = frames.result_rows(_measurements(), MODELS)
    assert [list(r) for r in rows] == [frames.result_keys()] * 2
    with_samples = frames.result_rows(_measurements(), MODELS, samples=True)
    assert list(with_samples[0]) == frames.result_keys(samples=True) == [*frames.result_keys(), "samples_ms"]
    assert with_samples[0]["samples_ms"] == [1.9, 2.0, 2.4] and with_samples[1]["samples_ms"] == []


def test_frame_has_exactly_the_json_columns_even_when_empty():
    pd = pytest.importorskip("pandas")
    rows = frames.result_rows(_measurements(), MODELS)
    frame = frames.data_frame(rows, frames.result_keys())
    assert list(frame.columns) == frames.result_keys() and len(frame) == 2
    assert frame.loc[0, "median_ms"] == 2.0 and math.isnan(frame.loc[1, "median_ms"])
    empty = frames.data_frame([], frames.result_keys())
    assert isinstance(empty, pd.DataFrame) and empty.empty and list(empty.columns) == frames.result_keys()


def test_parquet_round_trip_keeps_every_value(tmp_path):
    """Fails if a value (nested interference, flags, samples, nulls) changes on its way through parquet."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = frames.result_rows(_measurements(), MODELS, samples=True)
    path = tmp_path / "r.parquet"
    frames.write_parquet(frames.data_frame(rows, frames.result_keys(samples=True)), path)
    back = pd.read_parquet(path)
    assert list(back.columns) == frames.result_keys(samples=True)
    assert [{k: json_cell(v) for k, v in r.items()} for r in back.to_dict("records")] == json.loads(json.dumps(rows))


def test_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"results_df needs pandas.*pip install 'fleetmeter\[data\]'"):
        frames.data_frame([], ["a"], "results_df")
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"the search needs optuna.*fleetmeter\[optuna\]"):
        require("optuna", "the search")


def _client(args=None):
    """The two calls cmd_results makes, answering with the measurements built here."""
    return contextlib.nullcontext(SimpleNamespace(list_measurements=lambda **kw: _measurements(),
                                                  list_models=lambda: MODELS))


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"json": False, "format": "table", "sweep": None, "platform": None, "samples": False,
                                 "out": None, **kw})


def test_results_parquet_and_out(monkeypatch, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(cli, "_client", _client)
    out = tmp_path / "r.parquet"
    assert cli.cmd_results(_args(format="parquet", out=str(out), sweep="sw-1")) == 0
    assert capsys.readouterr().out == ""
    assert list(pd.read_parquet(out).columns) == frames.result_keys()
    as_json = tmp_path / "r.json"
    assert cli.cmd_results(_args(json=True, out=str(as_json))) == 0
    assert json.loads(as_json.read_text()) == json.loads(json.dumps(frames.result_rows(_measurements(), MODELS)))


def test_results_parquet_refusals(monkeypatch, capsys):
    """Fails if parquet goes to the terminal, or a missing extra is a traceback instead of a named fix."""
    asked = []
    monkeypatch.setattr(cli, "_client", lambda args: asked.append(args) or _client())
    with pytest.raises(cli.InvalidArgument, match="--out FILE"):
        cli.cmd_results(_args(format="parquet"))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert cli.cmd_results(_args(format="parquet", out="x.parquet")) == 2
    assert "pip install 'fleetmeter[data]'" in capsys.readouterr().err
    assert asked == [], "nothing is asked of the controller before the output can be written"
