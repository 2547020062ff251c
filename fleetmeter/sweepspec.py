"""Sweep specifications from files (YAML, TOML, JSON) and CLI flags.

A sweep file::

    name: cnn-baseline
    models: [tiny_convnet.onnx, 3f2a9c1b7d0e]   # existing files (uploaded first), sha256 prefixes or names
    platforms:
      runtimes: [onnxruntime]
      labels: {site: lab}
      platform_ids: []
    threads: [1, 2]
    repeats: 3
    priority: 0
    settings: {warmup_runs: 5, min_runs: 20, min_duration_ms: 500}
    inputs:
      - {name: input, shape: [1, 3, 224, 224]}

Unknown keys are errors that name the key; the controller validates the rest
(unknown models and platforms, nothing matching).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Optional

from fleetmeter._term import key_value_arg
from fleetmeter.errors import InvalidArgument
from fleetmeter.v1 import common_pb2, fleet_pb2

TOP_KEYS = {"name", "models", "platforms", "threads", "repeats", "priority", "settings", "inputs"}
PLATFORM_KEYS = {"platform_ids", "labels", "runtimes"}
SETTINGS_KEYS = {"warmup_runs", "min_runs", "min_duration_ms", "max_runs", "max_duration_ms", "stable_rel_tol"}
INPUT_KEYS = {"name", "shape", "fill"}


def load_sweep_file(path: str | Path) -> dict:
    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parser error is the file's fault
        raise InvalidArgument(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: a sweep file must be a mapping at the top level")
    _check_keys(data, TOP_KEYS, str(path))
    _check_keys(data.get("platforms") or {}, PLATFORM_KEYS, f"{path}: platforms")
    _check_keys(data.get("settings") or {}, SETTINGS_KEYS, f"{path}: settings")
    for i, item in enumerate(data.get("inputs") or []):
        _check_keys(item, INPUT_KEYS, f"{path}: inputs[{i}]")
    return data


def _check_keys(obj, allowed: set, where: str) -> None:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")




def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="sweep file (.yaml, .toml or .json)")
    p.add_argument("--name", default=None)
    p.add_argument("--model", action="append", default=[], metavar="REF",
                   help="model: file path (uploaded first), sha256 (prefix) or name; repeatable")
    p.add_argument("--platform", action="append", default=[], metavar="ID", help="platform id; repeatable")
    p.add_argument("--label", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                   help="only platforms with this label; repeatable")
    p.add_argument("--runtime", action="append", default=[], choices=("onnxruntime", "litert"))
    p.add_argument("--threads", action="append", type=int, default=[], metavar="N")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--priority", type=int, default=None)
    for flag in ("warmup-runs", "min-runs", "max-runs"):
        p.add_argument(f"--{flag}", type=int, default=None)
    for flag in ("min-duration-ms", "max-duration-ms"):
        p.add_argument(f"--{flag}", type=float, default=None)


def spec_from_args(args: argparse.Namespace, upload: Optional[Callable[[str], str]] = None) -> fleet_pb2.SweepSpec:
    """Merge the file (if any) and the flags into a ``SweepSpec``; model paths are uploaded via ``upload``."""
    data = load_sweep_file(args.file) if args.file else {}
    base_dir = Path(args.file).parent if args.file else Path(".")
    refs = [str(r) for r in (data.get("models") or [])] + list(args.model)
    models = []
    for ref in refs:
        path = next((p for p in (Path(ref), base_dir / ref) if p.is_file()), None)
        if path is not None:  # a file here: upload it (content-addressed, so a repeat is free)
            if upload is None:
                raise InvalidArgument(f"{ref}: model files need an upload step")
            models.append(upload(str(path)))
        else:  # sha256, a prefix, or the name of an uploaded model: the controller resolves it
            models.append(ref)
    platforms = data.get("platforms") or {}
    settings = dict(data.get("settings") or {})
    for key in SETTINGS_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
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
            settings=common_pb2.BenchSettings(**settings),
            inputs=[common_pb2.InputOverride(name=i["name"], shape=[int(d) for d in i.get("shape") or []],
                                             **({"fill": float(i["fill"])} if "fill" in i else {}))
                    for i in data.get("inputs") or []])
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"bad sweep specification: {exc}") from None
