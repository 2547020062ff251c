"""Fleet housekeeping and errors that point the right way (issue 12), as a user meets them: real `fleetmeter`
subprocesses and the client, over real gRPC, against a real controller (local Ray, SQLite) with a real
onnxruntime agent.

The module has its own controller (the drift canary off, so the sweep list holds only this module's sweeps)
rather than the session's shared one: it leaves behind a platform whose agent is gone (sweeps there stay
pending, which the Ctrl-C and model-removal tests need), and removes models. Checks parse ``--json``; the few
human lines checked are the contract itself (the end-of-wait summary, the Ctrl-C message, table widths).
"""
from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest

from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound
from fleetmeter.local_fleet import LocalFleet, wait_until
from fleetmeter.modeler.builtin import get_builtin_model
from fleetmeter.modeler.zoo.odd_files import write_corrupt_model

from _support import ctrl_c_reaches_it  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.integration

pytest.importorskip("ray", reason="the controller needs ray (pip install 'fleetmeter[controller]')")
pytest.importorskip("onnxruntime", reason="the agent under test serves onnxruntime")

CLI_TIMEOUT_S = 180
LONG_LABEL = "note=" + "a-long-operator-label-that-says-where-this-device-lives-" * 2
FAST = ("--warmup-runs", "1", "--min-runs", "5", "--min-duration-ms", "30", "--sessions", "1",
        "--repeat-sample", "-1")


@dataclass
class Setup:
    fleet: LocalFleet
    live: str        # the platform of the connected agent
    offline: str     # a platform whose only agent is gone: its jobs stay pending


@pytest.fixture(scope="module")
def hk(tmp_path_factory):
    fleet = LocalFleet(tmp_path_factory.mktemp("housekeeping"), agent_token=secrets.token_hex(8),
                       api_token=secrets.token_hex(8), lease_timeout_s=6.0, heartbeat_s=1.0)
    try:
        fleet.start_controller(None, 180.0, "--reference-interval-s", "0")
        fleet.start_agent("gone", "--runtime", "onnxruntime", "--threads", "1", "--label", "role=gone")
        fleet.start_agent("live", "--runtime", "onnxruntime", "--threads", "1", "--label", LONG_LABEL)
        fleet.wait_agents_connected(["gone", "live"])
        with fleet.client() as c:
            platforms = {d.name: d.platform_ids[0] for d in c.list_devices()}
        fleet.stop_agent("gone")

        def gone_is_offline() -> bool:
            with fleet.client() as c:
                return not any(d.connected for d in c.list_devices() if d.name == "gone")

        wait_until(gone_is_offline, 30.0, "the stopped agent to be offline")
        yield Setup(fleet, platforms["live"], platforms["gone"])
    finally:
        fleet.close()


def fm(hk: Setup, *args: str, token: bool = True) -> subprocess.CompletedProcess:
    env = dict(hk.fleet.env(), FLEETMETER_CONTROLLER=hk.fleet.address)
    if not token:
        env.pop("FLEETMETER_API_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "fleetmeter.cli", *args], capture_output=True, text=True, env=env,
                          timeout=CLI_TIMEOUT_S)


def fm_json(hk: Setup, *args: str):
    proc = fm(hk, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _unique_model(tmp_path, name: str, seed: int):
    """An ONNX model no other test uploads (removing it touches nobody else's jobs)."""
    from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes
    from fleetmeter.modeler.zoo.tiny import convnet

    path = tmp_path / name
    path.write_bytes(onnx_bytes(build_onnx(convnet(name.split(".")[0], input_size=16, widths=(4,)), seed=seed)))
    return path


# ------------------------------------------------------------------ sweep list, the end of --wait, Ctrl-C
def test_wait_ends_with_a_summary_and_the_next_command(hk):
    """Fails if `sweep submit --wait` does not end with one line saying how the sweep ended (done, failed,
    time) and what to run next, or if `sweep status --wait` on a finished sweep claims a duration."""
    model = get_builtin_model("tiny_mlp", "onnx").path
    proc = fm(hk, "sweep", "submit", "--model", str(model), "--platform", hk.live, "--name", "hk-summary", *FAST,
              "--wait")
    assert proc.returncode == 0, proc.stderr
    [sweep] = [s for s in fm_json(hk, "sweep", "list") if s["name"] == "hk-summary"]
    sid, p = sweep["sweep_id"], sweep["progress"]
    assert (p["state"], p["done"], p.get("failed", 0)) == ("done", 1, 0)
    last = proc.stdout.strip().splitlines()[-1]
    head = f"sweep {sid} done: 1 done, 0 failed in "
    tail = f" \u2014 next: fleetmeter results --sweep {sid}"
    assert last.startswith(head) and last.endswith(tail), last
    assert re.fullmatch(r"\d+s|\d+m\d\ds|\d+h\d\dm", last[len(head):-len(tail)]), last  # fmt_elapsed's forms

    again = fm(hk, "sweep", "status", sid, "--wait")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == f"sweep {sid} done: 1 done, 0 failed{tail}"


def test_ctrl_c_while_waiting_leaves_the_sweep_running(hk):
    """Fails if Ctrl-C during `sweep submit --wait` cancels the sweep, exits with another status than 130, or
    does not say that the sweep goes on and how to follow or cancel it."""
    model = get_builtin_model("tiny_mlp", "onnx").path
    env = dict(hk.fleet.env(), FLEETMETER_CONTROLLER=hk.fleet.address)
    proc = subprocess.Popen([sys.executable, "-m", "fleetmeter.cli", "sweep", "submit", "--model", str(model),
                             "--platform", hk.offline, *FAST, "--wait"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=ctrl_c_reaches_it)
    try:
        first = proc.stdout.readline()  # printed once the sweep is submitted, before following it
        sid = first.split()[1].rstrip(":")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert (f"stopped following; sweep {sid} goes on \u2014 follow: fleetmeter sweep status {sid} --wait; "
            f"cancel: fleetmeter sweep cancel {sid}") in err and "Traceback" not in err
    with hk.fleet.client() as c:
        assert c.get_sweep(sid).progress.state == "running"
        running = [s.sweep_id for s in c.list_sweeps(["running"])]
        assert sid in running
        c.cancel_sweep(sid)
        assert sid in [s.sweep_id for s in c.list_sweeps(["cancelled"])]
        assert sid not in [s.sweep_id for s in c.list_sweeps(["running", "done"])]
        with pytest.raises(InvalidArgument, match="unknown sweep state"):
            c.list_sweeps(["finished"])


def test_sweep_list_filters_by_state(hk):
    """Fails if `sweep list` is not newest first, or a --state filter keeps another state or drops a match."""
    model = get_builtin_model("tiny_mlp", "onnx").path
    made = {}
    for state, verb in (("paused", "pause"), ("cancelled", "cancel"), ("running", None)):
        made[state] = fm_json(hk, "sweep", "submit", "--model", str(model), "--platform", hk.offline, *FAST)["sweep_id"]
        if verb:
            assert fm(hk, "sweep", verb, made[state]).returncode == 0
    everything = fm_json(hk, "sweep", "list")
    assert {s["sweep_id"]: s["progress"]["state"] for s in everything if s["sweep_id"] in made.values()} == \
        {sid: state for state, sid in made.items()}
    assert [s["created_unix"] for s in everything] == sorted((s["created_unix"] for s in everything), reverse=True)
    for state in ("running", "paused", "cancelled", "done"):
        listed = fm_json(hk, "sweep", "list", "--state", state)
        assert [s["sweep_id"] for s in listed] == [s["sweep_id"] for s in everything
                                                   if s["progress"]["state"] == state], state
    both = fm_json(hk, "sweep", "list", "--state", "paused", "--state", "cancelled")
    assert {s["sweep_id"] for s in both} >= {made["paused"], made["cancelled"]}
    assert {s["progress"]["state"] for s in both} == {"paused", "cancelled"}
    for sid in (made["paused"], made["running"]):
        assert fm(hk, "sweep", "cancel", sid).returncode == 0


# ------------------------------------------------------------------ models rm
def test_models_rm_refuses_while_jobs_need_the_model_and_keeps_measurements(hk, tmp_path):
    """Fails if a model that pending jobs need is removed without --force (over gRPC: FAILED_PRECONDITION),
    if removal loses its measurements or leaves its file, or if an unknown name is not NOT_FOUND naming it."""
    path = _unique_model(tmp_path, "hk_rm_model.onnx", seed=1212)
    [uploaded] = fm_json(hk, "models", "add", str(path))
    sha = uploaded["sha256"]
    blob = hk.fleet.data_dir / "blobs" / sha[:2] / sha
    assert blob.is_file()
    measured = fm(hk, "sweep", "submit", "--model", str(path), "--platform", hk.live, *FAST, "--wait", "--json")
    assert measured.returncode == 0, measured.stderr
    measured_sweep = json.loads(measured.stdout)["sweep_id"]
    pending = fm_json(hk, "sweep", "submit", "--model", sha, "--platform", hk.offline, *FAST)["sweep_id"]

    refused = fm(hk, "models", "rm", "hk_rm_model.onnx")
    assert refused.returncode == 1 and "FailedPrecondition" in refused.stderr, refused.stderr
    assert pending in refused.stderr and "--force" in refused.stderr and "Traceback" not in refused.stderr
    with hk.fleet.client() as c:
        with pytest.raises(FailedPrecondition, match="pending job"):
            c.delete_model(sha)
        with pytest.raises(NotFound, match="unknown model 'no-such-model'"):
            c.delete_model("no-such-model")
    assert blob.is_file()

    removed = fm_json(hk, "models", "rm", sha[:10], "--force")
    assert removed["model"]["sha256"] == sha and removed["measurements_kept"] == 1 and removed["jobs_removed"] == 2
    assert not blob.exists()
    assert sha not in [m["sha256"] for m in fm_json(hk, "models", "list")]
    rows = fm_json(hk, "results", "--sweep", measured_sweep)
    assert [(r["model_sha256"], r["model"]) for r in rows] == [(sha, sha[:12])]  # kept, named by its sha256 now
    assert fm_json(hk, "sweep", "status", pending)["progress"]["state"] == "done"  # nothing left to run

    again = fm(hk, "models", "rm", "no-such-model")
    assert again.returncode == 1 and "unknown model 'no-such-model'" in again.stderr
    [back] = fm_json(hk, "models", "add", str(path))  # the same file can come back
    assert back["sha256"] == sha and not back.get("already_present", False) and blob.is_file()


# ------------------------------------------------------------------ tables fit 100 columns
def test_listings_fit_100_columns_and_json_keeps_full_values(hk, tmp_path):
    """Fails if a human listing runs past 100 columns (stdout is not a terminal here), or --json shortens."""
    model = get_builtin_model("tiny_mlp", "onnx").path
    assert fm(hk, "sweep", "submit", "--model", str(model), "--platform", hk.live, *FAST, "--wait").returncode == 0
    long_name = "a_rather_long_model_file_name_that_someone_exported_from_a_notebook_" * 2 + ".onnx"
    path = tmp_path / long_name
    path.write_bytes(get_builtin_model("tiny_squeeze", "onnx").path.read_bytes())
    fm_json(hk, "models", "add", str(path))
    for args in (("devices",), ("platforms",), ("models", "list"), ("sweep", "list"), ("results",)):
        proc = fm(hk, *args)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) >= 3 and max(len(line) for line in lines) <= 100, (args, max(map(len, lines)))
    assert long_name in [m["name"] for m in fm_json(hk, "models", "list")]
    devices = {d["name"]: d for d in fm_json(hk, "devices")}
    key, _, value = LONG_LABEL.partition("=")
    assert devices["live"]["labels"][key] == value
    assert hk.live in [p["platform_id"] for p in fm_json(hk, "platforms")]


# ------------------------------------------------------------------ errors that point the right way
def test_garbage_tflite_is_not_a_valid_tflite_model(hk, tmp_path):
    """Upload and predict both: fails if a damaged .tflite is reported as an invalid ONNX model."""
    garbage = tmp_path / "damaged.tflite"
    write_corrupt_model(garbage)
    proc = fm(hk, "models", "add", str(garbage))
    assert proc.returncode == 1 and "damaged.tflite: not a valid TFLite model" in proc.stderr, proc.stderr
    assert "ONNX" not in proc.stderr
    with hk.fleet.client() as c:
        with pytest.raises(InvalidArgument, match="not a valid TFLite model") as info:
            c.predict(garbage)
    assert "ONNX" not in str(info.value)


def test_a_mistyped_model_path_says_no_such_file(hk):
    proc = fm(hk, "sweep", "submit", "--model", "modles/tiny_mlp.onnx", "--platform", hk.live)
    assert proc.returncode == 1 and "no such file: modles/tiny_mlp.onnx" in proc.stderr, proc.stderr
    assert "upload it first" not in proc.stderr


def test_a_shell_glob_after_model_submits_every_file(hk, tmp_path):
    """`--model *.onnx` as the shell expands it: fails with 'unrecognized arguments' (or a file taken for the
    sweep file) instead of one sweep over every file."""
    files = []
    for i, name in enumerate(("tiny_mlp", "tiny_squeeze", "tiny_convnet")):
        files.append(tmp_path / f"{i}_{name}.onnx")
        files[-1].write_bytes(get_builtin_model(name, "onnx").path.read_bytes())
    sweep = fm_json(hk, "sweep", "submit", "--model", *map(str, files), "--platform", hk.offline, *FAST)
    assert len(sweep["spec"]["models"]) == 3 and sweep["progress"]["total"] == 3
    with hk.fleet.client() as c:
        c.cancel_sweep(sweep["sweep_id"])


@pytest.mark.parametrize("args", [("devices",), ("results",), ("sweep", "list")])  # unary and streaming calls
def test_a_missing_token_names_the_variable_and_the_flag(hk, args):
    proc = fm(hk, *args, token=False)
    assert proc.returncode == 1 and "Unauthenticated" in proc.stderr, proc.stderr
    assert "FLEETMETER_API_TOKEN" in proc.stderr and "--api-token" in proc.stderr
