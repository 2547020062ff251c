"""Ctrl-C while `sweep submit|status --wait` follows a sweep never hangs the command, even when closing the gRPC
client blocks (gRPC's close can block while another thread is inside a streaming call; a CI run saw `sweep submit
--wait` hang after Ctrl-C). A fake client whose watch and close both block for good stands in for the channel;
the command runs in its own process, gets SIGINT, and must say how to follow or cancel and exit 130."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

SCRIPT = r'''
import sys, threading, types
from fleetmeter import cli

cli.CLOSE_WAIT_S = 0.5
forever = threading.Event()

class Blocking:
    def watch_sweep(self, sweep_id):
        print("following", flush=True)
        forever.wait()
        yield from ()
    def close(self):
        forever.wait()

sweep = types.SimpleNamespace(sweep_id="sw-abc", progress=types.SimpleNamespace(state="running", leased=1))
args = types.SimpleNamespace(json=True, watch=False)
try:
    cli._follow_sweep(Blocking(), sweep, args)
except KeyboardInterrupt:
    sys.exit(cli._stopped_following("sw-abc"))
sys.exit(3)
'''


def test_ctrl_c_exits_130_even_when_closing_the_client_blocks():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "following"
        time.sleep(0.3)  # the main thread is in its join loop: where Ctrl-C lands while following
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert ("stopped following; sweep sw-abc goes on \u2014 follow: fleetmeter sweep status sw-abc --wait; "
            "cancel: fleetmeter sweep cancel sw-abc") in err and "Traceback" not in err
