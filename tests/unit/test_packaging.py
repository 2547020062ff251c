"""Packaging contracts: the device install stays light, the stubs are fresh, the public API is pinned."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "lightgbm", "pandas", "scipy")


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_device_install_pulls_no_heavy_dependency():
    """`pip install fleetmeter[agent,onnx,tflite]` must not bring Ray, LightGBM, pandas or SciPy onto a phone."""
    extras = _extras()
    device = _names(extras["agent"] + extras["onnx"] + extras["tflite"])
    assert not device & set(HEAVY), device
    assert not any(name.startswith("fleetmeter") for name in device), "device extras must not chain to others"
    assert "ray" in _names(extras["controller"]), "the controller extra is where Ray lives"
    assert {"agent", "onnx", "tflite", "controller", "modeler", "dev", "all"} <= set(extras)


def test_extras_do_not_transitively_pull_heavy_packages():
    """Follow the installed requirement graph of the device extras (best effort over what is installed here)."""
    from importlib import metadata

    extras = _extras()
    todo = list(_names(extras["agent"] + extras["onnx"] + extras["tflite"]))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [n for n in _names([r for r in requires if "extra ==" not in r])]
    assert not seen & set(HEAVY), sorted(seen & set(HEAVY))


BLOCKER = textwrap.dedent('''
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"ray", "lightgbm", "pandas", "onnx", "scipy"} or name.startswith(
                    ("fleetmeter.controller", "fleetmeter.modeler")):
                raise ImportError(f"blocked on a device: {name}")
            return None
    sys.meta_path.insert(0, Block())
''')


def test_agent_imports_and_runs_without_controller_dependencies(tmp_path):
    """In a fresh interpreter where Ray, LightGBM, pandas, onnx, SciPy and the controller/modeler code cannot be
    imported, every agent module imports and `fleetmeter-agent bench` measures a real model."""
    from fleetmeter.modeler.builtin import get_builtin_model

    model = get_builtin_model("tiny_mlp", "onnx").path
    code = BLOCKER + textwrap.dedent(f'''
        import importlib, json, io, contextlib
        for mod in ("cli", "connection", "bench", "runtimes", "stats", "probe", "power", "thermal", "spool",
                    "cache", "sysfs", "interference"):
            importlib.import_module("fleetmeter.agent." + mod)
        from fleetmeter.agent.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(["bench", {str(model)!r}, "--json", "--min-runs", "3", "--min-duration-ms", "5",
                       "--warmup", "1"])
        assert rc == 0, rc
        result = json.loads(out.getvalue())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "lightgbm", "pandas", "onnx", "scipy")
                        or m.startswith(("fleetmeter.controller", "fleetmeter.modeler")))
        print(json.dumps({{"n": result["latency_ms"]["n"], "loaded": loaded}}))
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["n"] >= 3 and report["loaded"] == []


def test_generated_stubs_are_fresh():
    """Editing a .proto without running protos/generate.py fails here."""
    proc = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_public_api_is_pinned():
    import fleetmeter
    import fleetmeter.client
    import fleetmeter.errors

    assert fleetmeter.__all__ == ["__version__", "FleetClient", "Client", "Prediction", "TlsFiles", "predict",
                                  "search"]
    import fleetmeter.hwsearch

    assert fleetmeter.search is fleetmeter.hwsearch.search  # issue 14's fleetmeter.search(...)
    assert fleetmeter.FleetClient is fleetmeter.client.FleetClient
    assert fleetmeter.Client is fleetmeter.client.Client and fleetmeter.predict is fleetmeter.client.predict
    assert fleetmeter.TlsFiles is fleetmeter._net.TlsFiles  # TLS from Python without a private import
    assert fleetmeter.client.__all__ == ["FleetClient", "Client", "Prediction", "TlsFiles", "predict"]
    # The predict contract of the issue: these JSON fields, in every record.
    assert {"platform", "target", "value", "lower", "upper", "unit", "predictor_version"} <= set(
        fleetmeter.Prediction.__dataclass_fields__)
    assert set(fleetmeter.errors.__all__) == {
        "FleetmeterError", "InvalidArgument", "NotFound", "FailedPrecondition", "ResourceExhausted", "Unavailable",
        "Aborted", "Unauthenticated", "PermissionDenied", "ModelNotFound", "NOT_FOUND_KEY", "error_class_for"}
