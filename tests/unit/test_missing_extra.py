"""A missing optional library reaches the caller as FAILED_PRECONDITION naming the extra to install,
and the controller extra installs everything ``train`` and ``predict`` import (issue 12)."""
from __future__ import annotations

import ast
import asyncio
import re
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

pytest.importorskip("lightgbm")

from fleetmeter import Client  # noqa: E402
from fleetmeter._extras import EXTRA_OF, MissingExtra, missing_extra, require  # noqa: E402
from fleetmeter.controller.engine import LocalEngine  # noqa: E402
from fleetmeter.controller.fleet import FleetConfig  # noqa: E402
from fleetmeter.controller.server import Controller, ControllerConfig  # noqa: E402
from fleetmeter.errors import FailedPrecondition  # noqa: E402
from fleetmeter.modeler.builtin import get_builtin_model  # noqa: E402
from fleetmeter.modeler.dataset import Sample  # noqa: E402
from fleetmeter.modeler.features import extract_features  # noqa: E402
from fleetmeter.modeler.learners import _lgb  # noqa: E402
from fleetmeter.modeler.methods import train_predictor  # noqa: E402
from fleetmeter.modeler.registry import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = "test-cpu"
EXTRA_HINT = re.escape("pip install 'fleetmeter[controller]'")


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_controller_extra_installs_what_the_modeler_and_controller_import():
    """Every third-party module imported anywhere under controller/ and modeler/ (zoo aside: `fleetmeter zoo`
    is its own extra) comes from a distribution the controller extra (with its agent extra) lists."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = _requirement_names(extras["controller"] + extras["agent"])
    roots = set()
    for folder in ("controller", "modeler"):
        for path in (ROOT / folder).rglob("*.py"):
            if "zoo" in path.relative_to(ROOT).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    roots |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    roots.add(node.module.split(".")[0])
    third_party = {r for r in roots if r != "fleetmeter" and r not in sys.stdlib_module_names}
    assert {"lightgbm", "scipy"} <= third_party, third_party  # what the controller lacked
    distributions = metadata.packages_distributions()
    missing = {root: distributions.get(root) for root in third_party
               if not _requirement_names(distributions.get(root, [root])) & listed}
    assert not missing, f"imported by controller/modeler but not in the controller extra: {missing}"
    assert {EXTRA_OF[r] for r in ("lightgbm", "scipy", "onnx")} == {"controller"}


def test_every_extra_named_exists_and_installs_its_module():
    """What :data:`EXTRA_OF` tells users to install is an extra of pyproject.toml that lists the module's
    distribution (checked where the module is installed here)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    distributions = metadata.packages_distributions()
    for module, extra in EXTRA_OF.items():
        assert extra in extras, (module, extra)
        listed = _requirement_names(extras[extra] + (extras["agent"] if extra == "controller" else []))
        installed_as = _requirement_names(distributions.get(module, []))
        assert not installed_as or installed_as & listed, (module, extra, installed_as)


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # as if not installed
    with pytest.raises(FailedPrecondition, match=EXTRA_HINT) as caught:
        _lgb()
    assert isinstance(caught.value, ImportError) and caught.value.module == "lightgbm"
    with pytest.raises(ImportError):  # a module no extra brings stays a plain ImportError
        require("fleetmeter_no_such_module")


def test_require_says_when_an_installed_library_does_not_load(tmp_path, monkeypatch):
    """LightGBM without libgomp1 raises OSError at import: still FAILED_PRECONDITION, saying why."""
    (tmp_path / "fleetmeter_broken_native.py").write_text(
        "raise OSError('libgomp.so.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FailedPrecondition, match="installed but does not load: libgomp.so.1"):
        require("fleetmeter_broken_native", "training predictors")


def test_missing_extra_follows_the_cause_chain():
    inner = ModuleNotFoundError("No module named 'scipy'", name="scipy")
    try:
        try:
            raise inner
        except ImportError as exc:
            raise RuntimeError("fitting failed") from exc
    except RuntimeError as outer:
        found = missing_extra(outer, "this controller")
    assert isinstance(found, MissingExtra) and found.extra == "controller" and found.module == "scipy"
    assert str(found).startswith("this controller needs scipy")
    assert missing_extra(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    assert missing_extra(ValueError("x")) is None


@pytest.fixture
def trained_data_dir(tmp_path):
    """A data dir whose registry holds one LightGBM predictor of latency_ms (trained while LightGBM is here)."""
    built = [get_builtin_model(name, "onnx").path for name in ("tiny_mlp", "tiny_convnet", "tiny_depthwise", "tiny_resnet")]
    samples = []
    for i, path in enumerate(built * 2):
        features = extract_features(path)
        samples.append(Sample(model_sha256=f"{i:064x}", family=f"f{i % 3}", platform_id=PLATFORM,
                              values={"latency_ms": 0.05 + features.model["macs"] / 1e7 * (1 + i / 10)},
                              features=dict(features.model)))
    predictor = train_predictor(samples, "latency_ms", calibrate=False, rounds=20)
    assert predictor.booster is not None  # predicting it needs LightGBM
    Registry(tmp_path / "predictors").save(predictor, platform_id=PLATFORM, training_fingerprint="test")
    return tmp_path, built[0]


def test_predict_without_lightgbm_is_failed_precondition_naming_the_extra(trained_data_dir, monkeypatch):
    """Through the real controller (real gRPC on loopback, the boundary interceptor, the predictor service):
    LightGBM gone, `predict` answers FAILED_PRECONDITION with the extra, not INTERNAL."""
    data_dir, model = trained_data_dir
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    ready, box = threading.Event(), {}

    async def serve() -> None:
        ctl = Controller(ControllerConfig(listen="127.0.0.1:0", data_dir=data_dir, api_token="api",
                                          agent_token="agent", nice=0, fleet=FleetConfig(reference_interval_s=0)),
                         engine=LocalEngine())
        box["address"], box["stop"], box["loop"] = await ctl.start(), asyncio.Event(), asyncio.get_running_loop()
        ready.set()
        await box["stop"].wait()
        await ctl.stop()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "controller did not start"
        with Client(box["address"], token="api") as client:
            with pytest.raises(FailedPrecondition, match=EXTRA_HINT) as caught:
                client.predict(model, PLATFORM)
        assert "lightgbm" in str(caught.value)
    finally:
        if "loop" in box:
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
