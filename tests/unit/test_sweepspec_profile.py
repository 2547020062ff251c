"""Sweep files are validated with every problem named by file, line and field; operator profiles parse."""
from __future__ import annotations

import argparse

import pytest

from fleetmeter.agent.profile import parse_ort_profile
from fleetmeter.errors import InvalidArgument
from fleetmeter.sweepspec import add_sweep_arguments, load_sweep_file, spec_from_args

from _support import assert_sweep_file_problems  # tests/ is on sys.path

GOOD_YAML = """\
name: s
models: [aaaaaaaa]
platforms: {runtimes: [onnxruntime], labels: {site: lab}}
threads: [1, 2]
repeats: 3
settings: {warmup_runs: 2, min_duration_ms: 100}
inputs:
  - {name: x, shape: [1, 3, 8, 8]}
cooldown_s: 1.5
profile_operators: true
"""


def test_good_yaml_becomes_a_spec(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD_YAML)
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    spec = spec_from_args(parser.parse_args([str(path), "--threads", "4", "--repeats", "5"]))
    assert list(spec.models) == ["aaaaaaaa"] and list(spec.threads) == [1, 2, 4] and spec.repeats == 5
    assert spec.settings.min_duration_ms == 100 and spec.cooldown_s == 1.5 and spec.profile_operators
    assert list(spec.inputs[0].shape) == [1, 3, 8, 8] and dict(spec.platforms.labels) == {"site": "lab"}


def test_every_problem_is_reported_with_its_line_and_field(tmp_path):
    """Fails if a problem is missed, or reported without the line a user must fix."""
    path = tmp_path / "bad.yaml"
    assert_sweep_file_problems(path, "models: [a]\n"          # 1
                                     "repeats: 0\n"            # 2
                                     "settings:\n"             # 3
                                     "  min_runs: many\n"      # 4
                                     "  min_ruhs: 3\n"         # 5
                                     "platforms:\n"            # 6
                                     "  runtimes: [tensorrt]\n"  # 7
                                     "inputs:\n"               # 8
                                     "  - {shape: [1, -3]}\n"  # 9
                                     "colldown_s: 2\n",        # 10
                               (f"{path}:2: repeats: must be >= 1", f"{path}:4: settings.min_runs: expected an integer",
                                f"{path}:5: settings.min_ruhs: unknown setting",
                                f"{path}:7: platforms.runtimes[0]: unknown runtime 'tensorrt'",
                                f"{path}:9: inputs[0].name:", f"{path}:9: inputs[0].shape:",
                                f"{path}:10: colldown_s: unknown key"))


def test_toml_and_json_problems_name_the_line(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('models = ["a"]\nthreads = [1, "two"]\n')
    with pytest.raises(InvalidArgument, match=r"s\.toml:2: threads\[1\]: expected an integer"):
        load_sweep_file(toml)
    js = tmp_path / "s.json"
    js.write_text('{"models": ["a"],\n "prioritty": 3}')
    with pytest.raises(InvalidArgument, match=r"s\.json:2: prioritty: unknown key"):
        load_sweep_file(js)
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [a\n")
    with pytest.raises(InvalidArgument, match="cannot parse"):
        load_sweep_file(broken)


def _event(node, dur, op="Conv", shape=(1, 3, 8, 8)):
    return {"cat": "Node", "name": f"{node}_kernel_time", "dur": dur,
            "args": {"op_name": op, "provider": "CPUExecutionProvider",
                     "input_type_shape": [{"float": list(shape)}], "output_type_shape": [{"float": [1, 4, 8, 8]}]}}


def test_ort_profile_parsing_skips_warmup_and_keeps_shapes():
    """Fails if warm-up runs leak into operator times, or shapes/op types are lost."""
    events = [{"cat": "Session", "name": "model_run", "dur": 999}]
    for run, (a, b) in enumerate([(1000, 900), (10, 20), (12, 22), (14, 24)]):
        events += [_event("conv1", a), _event("relu1", b, op="Relu")]
    ops = parse_ort_profile(events, skip_runs=1)
    assert [o["node_name"] for o in ops] == ["conv1", "relu1"]
    conv = ops[0]
    assert (conv["median_us"], conv["runs"], conv["op_type"]) == (12.0, 3, "Conv")
    assert conv["input_shapes"] == ["1x3x8x8"] and conv["output_shapes"] == ["1x4x8x8"]


def test_globs_and_zoo_specs_become_uploads(tmp_path):
    """Fails if a glob or a zoo model set is not expanded into files, or a bad zoo spec is not reported."""
    for name in ("a.onnx", "b.onnx", "c.tflite"):
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "s.yaml"
    path.write_text('models: ["*.onnx", {zoo: {family: squeezenet, count: 2, seed: 3, formats: [onnx]}}, abcdef12]\n')
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    uploaded = []
    spec = spec_from_args(parser.parse_args([str(path)]), upload=lambda p: uploaded.append(p) or f"sha-{len(uploaded)}",
                          zoo_cache=tmp_path / "zoo-cache")
    names = [p.rsplit("/", 1)[-1] for p in uploaded]
    assert names[:2] == ["a.onnx", "b.onnx"] and len(names) == 4 and all(n.endswith(".onnx") for n in names[2:])
    assert list(spec.models) == ["sha-1", "sha-2", "sha-3", "sha-4", "abcdef12"]
    again = []
    spec_from_args(parser.parse_args([str(path)]), upload=lambda p: again.append(p) or "x",
                   zoo_cache=tmp_path / "zoo-cache")
    assert again == uploaded, "the same zoo spec gives the same files"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {zoo: {family: resnet, count: 0, color: red}}\n  - 'nothing*.onnx'\n")
    with pytest.raises(InvalidArgument) as err:
        load_sweep_file(bad)
    assert "models[0].zoo.count: must be >= 1" in str(err.value) and "models[0].zoo.color" in str(err.value)
    nothing = tmp_path / "g.yaml"
    nothing.write_text("models: ['nothing*.onnx']\n")
    with pytest.raises(InvalidArgument, match="matched no file"):
        spec_from_args(parser.parse_args([str(nothing)]), upload=lambda p: "x")


def test_the_sweep_file_schema_is_the_protos(tmp_path):
    """Fails if the sweep file keeps a field table of its own that drifts from the proto (a field added to
    SweepSpec, BenchSettings or ReadingSettings must be accepted in a file without another list to edit)."""
    from fleetmeter import sweepspec
    from fleetmeter.v1 import common_pb2, fleet_pb2

    assert sweepspec.TOP_KEYS == {f.name for f in fleet_pb2.SweepSpec.DESCRIPTOR.fields}
    assert set(sweepspec.SETTINGS_FIELDS) == {f.name for f in common_pb2.BenchSettings.DESCRIPTOR.fields}
    assert set(sweepspec.READING_FIELDS) == {f.name for f in common_pb2.ReadingSettings.DESCRIPTOR.fields}
    path = tmp_path / "all.json"
    settings = {name: (0.5 if kind is float else 5) for name, kind in sweepspec.SETTINGS_FIELDS.items()}
    path.write_text(__import__("json").dumps({"models": ["aaaaaaaa"], "settings": settings,
                                              "max_device_failures": 2, "repeat_sample": -1}))
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    spec = spec_from_args(parser.parse_args([str(path)]))
    assert {f.name for f, _ in spec.settings.ListFields()} == set(settings)
    assert spec.max_device_failures == 2 and spec.repeat_sample == -1
    path.write_text('{"models": ["a"], "settings": {"min_runs": "many"}, "cooldown_s": true}')
    with pytest.raises(InvalidArgument) as err:
        load_sweep_file(path)
    assert "settings.min_runs: expected an integer >= 0, got 'many'" in str(err.value)
    assert "cooldown_s: expected a number >= 0, got True" in str(err.value)
