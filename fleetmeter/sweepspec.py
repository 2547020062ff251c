"""Sweep specifications from files (YAML, TOML, JSON) and CLI flags.

A sweep file::

    name: cnn-baseline
    models:                                     # existing files or globs (uploaded first), sha256 prefixes,
      - tiny_convnet.onnx                       # names of uploaded models, or zoo model sets (generated
      - "zoo/*.tflite"                          # here, cached by spec, then uploaded)
      - 3f2a9c1b7d0e
      - {zoo: {family: mobilenetv2, count: 20, seed: 1, formats: [onnx, tflite]}}
    platforms:                                  # which platforms (all conditions must hold)
      runtimes: [onnxruntime]
      labels: {site: lab}
      platform_ids: []
    threads: [1, 2]                             # only platforms with these thread counts
    repeats: 3
    priority: 0                                 # higher runs first; equal priorities share fairly
    settings: {warmup_runs: 5, min_runs: 20, min_duration_ms: 500, max_runs: 10000, max_duration_ms: 30000}
    inputs:
      - {name: input, shape: [1, 3, 224, 224]}
      - {name: sample_rate, fill: 16000}
    max_device_failures: 1      # a model that cannot run on this many devices of a platform is failed there
    cooldown_s: 0               # pause between two jobs on one device
    max_start_temp_c: 0         # thermal gate (0: off) ...
    max_thermal_wait_s: 0       # ... waiting at most this long
    profile_operators: false    # separate profiled pass with per-operator times (onnxruntime)
    reading:                    # a reading is several independent sessions (absent: the agent's defaults)
      sessions: 3               # independent loads of the model per reading
      max_sessions: 6           # bound on sessions, re-measures included
      max_session_spread: 0.05  # (max-min)/median of the sessions' medians above this: re-measure, else "unstable"
      max_other_cpu_cores: 0.25 # other processes' CPU during a timed window above this: "disturbed"
      max_steal_share: 0.05     # steal time share of a window above this: "disturbed"
      max_disturbed_reruns: 2   # re-runs of a disturbed session before the reading is flagged
      isolate: true             # each session in its own process
      session_min_duration_ms: 200
      max_probe_slowdown: 0.10  # the machine's speed probe around a window vs its recent best: above, "disturbed"
      max_speed_wait_s: 3       # before a session, wait at most this long for the probe to be fast again
    repeat_sample: 0.1          # re-measure this share of the (model, platform) pairs late in the sweep
                                # (feeds the platforms' noise ceilings); 0: the default 0.1, negative: none

Every problem is reported at once, each with the file, the line and the field
(``sweep.yaml:7: settings.min_runs: expected an integer >= 0, got 'many'``).
The controller validates the rest (unknown models and platforms, nothing matching).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from fleetmeter import fields
from fleetmeter._term import key_value_arg
from fleetmeter.errors import InvalidArgument
from fleetmeter.v1 import common_pb2, fleet_pb2

# The file's schema is the proto's: every key and its type come from the SweepSpec, BenchSettings,
# ReadingSettings, PlatformSelector and InputOverride descriptors (fleetmeter/fields.py). What the proto cannot
# say (minimums, the model-reference forms, zoo sets) is checked below.
_SPEC = {f.name: f for f in fleet_pb2.SweepSpec.DESCRIPTOR.fields}
SETTINGS_FIELDS = {f.name: fields.python_kind(f) for f in common_pb2.BenchSettings.DESCRIPTOR.fields}
#: The spec's scalar keys and their types (repeat_sample has its own rule below).
SCALAR_FIELDS = {name: fields.python_kind(_SPEC[name]) for name in fields.SPEC_SCALARS if name != "repeat_sample"}
#: ReadingSettings field → (type, minimum): every field is >= 0 but the session counts (>= 1); a switch has no
#: minimum. The controller checks them again (controller/quality.py: READING_LIMITS).
READING_FIELDS = {f.name: (bool, None) if fields.python_kind(f) is bool else
                  (int, 1 if f.name in ("sessions", "max_sessions") else 0) if fields.python_kind(f) is int
                  else (float, 0) for f in common_pb2.ReadingSettings.DESCRIPTOR.fields}
TOP_KEYS = set(_SPEC)
PLATFORM_KEYS = set(fields.PLATFORM_SELECTOR_FIELDS)
INPUT_KEYS = set(fields.INPUT_FIELDS)
RUNTIMES = ("onnxruntime", "litert")


class _Problems:
    """Collects ``file:line: field: message`` lines."""

    def __init__(self, path: Path, lines: dict[tuple, int], text: str) -> None:
        self.path, self.lines, self.text, self.items = path, lines, text, []

    def line_of(self, where: tuple) -> Optional[int]:
        for n in range(len(where), 0, -1):
            if where[:n] in self.lines:
                return self.lines[where[:n]]
        key = next((w for w in reversed(where) if isinstance(w, str)), None)
        if key is not None:  # TOML / JSON: the first line that starts with this key
            for i, line in enumerate(self.text.splitlines(), 1):
                if re.match(rf'\s*"?{re.escape(key)}"?\s*[:=]', line):
                    return i
        return None

    def add(self, where: tuple, message: str) -> None:
        field = "".join(f"[{w}]" if isinstance(w, int) else (f".{w}" if i else w) for i, w in enumerate(where))
        line = self.line_of(where)
        self.items.append(f"{self.path}{f':{line}' if line else ''}: {field or '(top level)'}: {message}")


def _yaml_lines(text: str) -> dict[tuple, int]:
    """(key path) → 1-based line, from YAML's node marks."""
    import yaml

    out: dict[tuple, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                out[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    walk(yaml.compose(text), ())
    return out


def load_sweep_file(path: str | Path) -> dict:
    """Parse and validate a sweep file; raises InvalidArgument listing every problem with its line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidArgument(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    lines: dict[tuple, int] = {}
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            lines = _yaml_lines(text) if isinstance(data, dict) else {}
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise InvalidArgument(f"{path}: unknown sweep file type {path.suffix!r} (use .yaml, .toml or .json)")
    except InvalidArgument:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser error is the file's fault; its text names the line
        raise InvalidArgument(f"{path}: cannot parse: {exc}") from None
    problems = _Problems(path, lines, text)
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: a sweep file must be a mapping at the top level")
    _validate(data, problems)
    if problems.items:
        raise InvalidArgument(f"{len(problems.items)} problem(s) in the sweep file:\n  " + "\n  ".join(problems.items))
    return data


def _check_type(value: Any, kind: type, where: tuple, problems: _Problems, minimum: Optional[float] = None) -> None:
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, str) if kind is str else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        names = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}
        problems.add(where, f"expected {names[kind]}{f' >= {minimum:g}' if minimum is not None else ''}, "
                            f"got {value!r}")
    elif minimum is not None and value < minimum:
        problems.add(where, f"must be >= {minimum:g}, got {value!r}")


ZOO_KEYS = {"family", "count", "seed", "formats"}
#: = fleetmeter.modeler.zoo.build.FORMATS (a test keeps them equal; not imported: it pulls in numpy).
ZOO_FORMATS = ("onnx", "tflite", "tflite-int8")


def _validate_zoo(item: dict, where: tuple, problems: _Problems) -> None:
    if set(item) != {"zoo"} or not isinstance(item["zoo"], dict):
        problems.add(where, "a model-set mapping must be {zoo: {family, count, seed, formats}}")
        return
    zoo = item["zoo"]
    where = where + ("zoo",)
    for key in sorted(set(zoo) - ZOO_KEYS):
        problems.add(where + (key,), f"unknown key; allowed: {', '.join(sorted(ZOO_KEYS))}")
    if not isinstance(zoo.get("family"), str):
        problems.add(where + ("family",), "a family name (see: fleetmeter zoo families) or 'all'")
    _check_type(zoo.get("count"), int, where + ("count",), problems, minimum=1)
    if "seed" in zoo:
        _check_type(zoo["seed"], int, where + ("seed",), problems, minimum=0)
    formats = zoo.get("formats", ["onnx", "tflite"])
    if not isinstance(formats, list) or not formats or any(f not in ZOO_FORMATS for f in formats):
        problems.add(where + ("formats",), f"a list of {', '.join(ZOO_FORMATS)}, got {formats!r}")


def _expand_zoo(spec: dict, cache_root: Path) -> list[Path]:
    """Build (or reuse: same spec, same bytes) a zoo model set and return its files."""
    import hashlib

    from fleetmeter.modeler.zoo.build import build_zoo

    formats = tuple(spec.get("formats") or ("onnx", "tflite"))
    key = json.dumps({"family": spec["family"], "count": spec["count"], "seed": spec.get("seed", 0),
                      "formats": formats}, sort_keys=True)
    out = cache_root / hashlib.sha256(key.encode()).hexdigest()[:16]
    entries = build_zoo(spec["family"], int(spec["count"]), int(spec.get("seed", 0)), formats, out)
    return [out / e["file"] for e in entries]


def _validate(data: dict, problems: _Problems) -> None:
    for key in sorted(set(data) - TOP_KEYS):
        problems.add((key,), f"unknown key; allowed: {', '.join(sorted(TOP_KEYS))}")
    for key, kind in SCALAR_FIELDS.items():
        if key in data:
            _check_type(data[key], kind, (key,), problems,
                        minimum=1 if key == "repeats" else (0 if kind in (int, float) and key != "priority" else None))
    for key, check in (("models", _validate_models), ("threads", _validate_threads),
                       ("platforms", _validate_platforms), ("settings", _validate_settings),
                       ("reading", _validate_reading), ("inputs", _validate_inputs)):
        if data.get(key) is not None:
            check(data[key], problems)
    if "repeat_sample" in data:
        _check_type(data["repeat_sample"], float, ("repeat_sample",), problems)
        value = data["repeat_sample"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value <= 1:
            problems.add(("repeat_sample",), f"a share of the pairs: must be <= 1 (0: the default 0.1, negative: "
                                             f"none), got {value!r}")


def _validate_models(models: Any, problems: _Problems) -> None:
    if not isinstance(models, list) or not models:
        problems.add(("models",), "expected a non-empty list of model files, sha256 prefixes or names")
        return
    for i, m in enumerate(models):
        if isinstance(m, dict):
            _validate_zoo(m, ("models", i), problems)
        elif not isinstance(m, str) or not m:
            problems.add(("models", i), "expected a file path or glob, sha256 (prefix), name, or "
                                        f"{{zoo: {{family, count, seed, formats}}}}, got {m!r}")


def _validate_threads(threads: Any, problems: _Problems) -> None:
    if not isinstance(threads, list):
        problems.add(("threads",), f"expected a list of thread counts, got {threads!r}")
        return
    for i, t in enumerate(threads):
        _check_type(t, int, ("threads", i), problems, minimum=1)


def _validate_platforms(platforms: Any, problems: _Problems) -> None:
    if not isinstance(platforms, dict):
        problems.add(("platforms",), "expected a mapping with platform_ids, labels and/or runtimes")
        return
    for key in sorted(set(platforms) - PLATFORM_KEYS):
        problems.add(("platforms", key), f"unknown key; allowed: {', '.join(sorted(PLATFORM_KEYS))}")
    for key in ("platform_ids", "runtimes"):
        value = platforms.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            problems.add(("platforms", key), f"expected a list of strings, got {value!r}")
    for i, rt in enumerate(platforms.get("runtimes") or []):
        if isinstance(rt, str) and rt not in RUNTIMES:
            problems.add(("platforms", "runtimes", i), f"unknown runtime {rt!r}; expected one of {RUNTIMES}")
    labels = platforms.get("labels")
    if labels is not None and not isinstance(labels, dict):
        problems.add(("platforms", "labels"), f"expected a mapping of label: value, got {labels!r}")


def _validate_fields(section: str, value: Any, what: str, limits: dict, problems: _Problems) -> bool:
    """A mapping of settings under ``section``: no unknown key, each known one of its type and at least its
    minimum (``limits``: key -> (type, minimum or None)). Whether ``value`` is a mapping at all."""
    if not isinstance(value, dict):
        problems.add((section,), f"expected a mapping of {what}")
        return False
    for key in sorted(set(value) - set(limits)):
        problems.add((section, key), f"unknown setting; allowed: {', '.join(sorted(limits))}")
    for key, (kind, minimum) in limits.items():
        if key in value:
            _check_type(value[key], kind, (section, key), problems, minimum=minimum)
    return True


def _validate_settings(settings: Any, problems: _Problems) -> None:
    _validate_fields("settings", settings, "measurement settings",
                     {key: (kind, 0) for key, kind in SETTINGS_FIELDS.items()}, problems)


def _validate_reading(reading: Any, problems: _Problems) -> None:
    if not _validate_fields("reading", reading, "reading settings (sessions, max_session_spread ...)",
                            READING_FIELDS, problems):
        return
    if isinstance(reading.get("max_steal_share"), (int, float)) and reading["max_steal_share"] > 1:
        problems.add(("reading", "max_steal_share"), f"a share: must be <= 1, got {reading['max_steal_share']!r}")


def _validate_inputs(inputs: Any, problems: _Problems) -> None:
    if not isinstance(inputs, list):
        problems.add(("inputs",), "expected a list of {name, shape and/or fill}")
        return
    for i, item in enumerate(inputs):
        where = ("inputs", i)
        if not isinstance(item, dict):
            problems.add(where, f"expected a mapping with name, shape and/or fill, got {item!r}")
            continue
        for key in sorted(set(item) - INPUT_KEYS):
            problems.add(where + (key,), f"unknown key; allowed: {', '.join(sorted(INPUT_KEYS))}")
        if not isinstance(item.get("name"), str) or not item.get("name"):
            problems.add(where + ("name",), "every input override needs the input's name")
        shape = item.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
            problems.add(where + ("shape",), f"expected a list of positive integers, got {shape!r}")
        if "fill" in item:
            _check_type(item["fill"], float, where + ("fill",), problems)
        if "shape" not in item and "fill" not in item:
            problems.add(where, "an input override needs a shape and/or a fill")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="sweep file (.yaml, .toml or .json); flags add to or override it")
    p.add_argument("--name", default=None)
    p.add_argument("--model", action="extend", nargs="+", default=[], metavar="REF",
                   help="models: file paths (uploaded first; a shell glob is fine), sha256 (prefix) or names; "
                        "repeatable. Put a sweep file before --model, which takes every argument after it")
    p.add_argument("--platform", action="append", default=[], metavar="ID", help="platform id; repeatable")
    p.add_argument("--label", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                   help="only platforms with this label; repeatable")
    p.add_argument("--runtime", action="append", default=[], choices=RUNTIMES)
    p.add_argument("--threads", action="append", type=int, default=[], metavar="N")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--priority", type=int, default=None, help="higher runs first (default 0)")
    for flag in ("warmup-runs", "min-runs", "max-runs"):
        p.add_argument(f"--{flag}", type=int, default=None)
    for flag in ("min-duration-ms", "max-duration-ms"):
        p.add_argument(f"--{flag}", type=float, default=None)
    p.add_argument("--max-device-failures", type=int, default=None,
                   help="fail a model on a platform after it failed on this many of its devices (default 1)")
    p.add_argument("--cooldown-s", type=float, default=None, help="pause between two jobs on one device")
    p.add_argument("--max-start-temp-c", type=float, default=None,
                   help="thermal gate: start a job only below this temperature (needs --max-thermal-wait-s)")
    p.add_argument("--max-thermal-wait-s", type=float, default=None, help="longest wait for the thermal gate")
    p.add_argument("--profile-operators", action="store_true", default=None,
                   help="also run a separate profiled pass for per-operator times (onnxruntime)")
    p.add_argument("--sessions", type=int, default=None, metavar="N",
                   help="independent sessions (loads of the model) per reading (default: the agent's, 3)")
    p.add_argument("--max-session-spread", type=float, default=None, metavar="X",
                   help="re-measure (then flag 'unstable') a reading whose sessions' medians spread more than this "
                        "fraction of their median (default: the agent's, 0.05)")
    p.add_argument("--repeat-sample", type=float, default=None, metavar="SHARE",
                   help="re-measure this share of the (model, platform) pairs late in the sweep, for the "
                        "platforms' noise ceilings (default 0.1; negative: none)")


#: Endings of model files and of sweep files: a model reference that ends so (or holds a path separator) names
#: a file, not an uploaded model.
MODEL_FILE_SUFFIXES = (".onnx", ".tflite", ".lite", ".ort")
SWEEP_FILE_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


def _check_not_sweep_file(ref: str) -> None:
    if ref.lower().endswith(SWEEP_FILE_SUFFIXES):
        raise InvalidArgument(f"{ref} is a sweep file, not a model; --model takes every argument after it, so "
                              f"put the sweep file first: fleetmeter sweep submit {ref} --model ...")


def _check_not_missing_file(ref: str, base_dir: Optional[Path],
                            known_names: Optional[Callable[[], Iterable[str]]]) -> None:
    """InvalidArgument ``no such file: REF`` for a reference that looks like a path (a separator, a leading
    ``~`` or ``.``, a model or sweep file ending) and names no file, rather than the controller's "unknown
    model ... upload it first". A bare file name may be an uploaded model's name (uploads are named after
    their file): fine when ``known_names()`` lists it."""
    _check_not_sweep_file(ref)
    looks_like_path = any(sep in ref for sep in "/\\") or ref.startswith(("~", ".")) \
        or ref.lower().endswith(MODEL_FILE_SUFFIXES)
    if not looks_like_path or (known_names is not None and ref in set(known_names())):
        return
    where = f" (relative to {base_dir}, the sweep file's folder)" if base_dir is not None else ""
    raise InvalidArgument(f"no such file: {ref}{where}; an uploaded model is named by its sha256 (or a prefix) or "
                          "its name (see: fleetmeter models list)")


def spec_from_args(args: argparse.Namespace, upload: Optional[Callable[[str], str]] = None,
                   zoo_cache: Optional[Path] = None,
                   known_names: Optional[Callable[[], Iterable[str]]] = None) -> fleet_pb2.SweepSpec:
    """Merge the file (if any) and the flags into a ``SweepSpec``; model files (paths, globs, zoo specs)
    are uploaded via ``upload``. A reference that looks like a file path but names no file is an error
    (``no such file``) unless ``known_names`` (the uploaded models' names, asked for only then) lists it."""
    data = load_sweep_file(args.file) if args.file else {}
    base_dir = Path(args.file).parent if args.file else Path(".")
    refs = list(data.get("models") or []) + list(args.model)
    files: list[Path] = []
    models = []
    for ref in refs:
        if isinstance(ref, dict):  # a zoo spec: generated here (cached), then uploaded
            files += _expand_zoo(ref["zoo"], Path(zoo_cache or Path.home() / ".cache" / "fleetmeter" / "zoo"))
            continue
        ref = str(ref)
        if any(ch in ref for ch in "*?["):  # a glob, relative to the sweep file's folder
            matched = sorted(p for p in (base_dir.glob(ref) if not Path(ref).is_absolute()
                                         else Path("/").glob(ref.lstrip("/"))) if p.is_file())
            if not matched:
                raise InvalidArgument(f"model pattern {ref!r} matched no file (relative to {base_dir})")
            files += matched
            continue
        path = next((p for p in (Path(ref), base_dir / ref) if p.is_file()), None)
        if path is not None:  # a file here: upload it (content-addressed, so a repeat is free)
            _check_not_sweep_file(ref)
            files.append(path)
        else:  # sha256, a prefix, or the name of an uploaded model: the controller resolves it
            _check_not_missing_file(ref, base_dir if args.file else None, known_names)
            models.append(ref)
    if files and upload is None:
        raise InvalidArgument(f"{files[0]}: model files need an upload step")
    models = [upload(str(p)) for p in files] + models
    platforms = data.get("platforms") or {}
    settings = dict(data.get("settings") or {})
    for key in SETTINGS_FIELDS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    reading = dict(data.get("reading") or {})
    for key in ("sessions", "max_session_spread"):
        value = getattr(args, key, None)
        if value is not None:
            reading[key] = value
    extras = {}
    for key in fields.SPEC_EXTRAS:
        value = getattr(args, key, None)
        value = data.get(key) if value is None else value
        if value:
            extras[key] = value
    try:
        return fleet_pb2.SweepSpec(
            name=args.name or str(data.get("name") or ""), models=models,
            platforms=fleet_pb2.PlatformSelector(
                platform_ids=list(platforms.get("platform_ids") or []) + list(args.platform),
                labels={**{str(k): str(v) for k, v in (platforms.get("labels") or {}).items()}, **dict(args.label)},
                runtimes=list(platforms.get("runtimes") or []) + list(args.runtime)),
            threads=[int(t) for t in (data.get("threads") or [])] + list(args.threads),
            repeats=int(args.repeats if args.repeats is not None else data.get("repeats") or 1),
            priority=int(args.priority if args.priority is not None else data.get("priority") or 0),
            settings=common_pb2.BenchSettings(**settings), reading=common_pb2.ReadingSettings(**reading),
            inputs=[common_pb2.InputOverride(name=i["name"], shape=[int(d) for d in i.get("shape") or []],
                                             **({"fill": float(i["fill"])} if "fill" in i else {}))
                    for i in data.get("inputs") or []],
            **extras)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"bad sweep specification: {exc}") from None
