"""Chaos in the suite: ``benchmarks/chaos.py --quick`` kills an agent, the fleet actor and the whole controller
(kill -9 each) during a sweep on a real fleet; afterwards every job has exactly one linked measurement or a
recorded failure, the store is intact, scheduling resumed within 10 s of the actor kill and the agents were
back within 5 s of the controller answering again. The full run (20+ random kills) is the benchmark."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_random_kills_lose_and_duplicate_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "chaos.py"), "--quick", "--out-dir",
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    report = json.loads((tmp_path / "chaos.json").read_text()) if (tmp_path / "chaos.json").exists() else None
    assert report is not None, out.stdout[-3000:] + out.stderr[-3000:]
    assert report["kills_by_kind"] == {"agent": 1, "actor": 1, "controller": 1}
    assert report["jobs"] > 0 and report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["integrity"] == "ok"
    assert report["actor_kill_resume_s"]["max"] <= 10.0, report["events"]
    assert report["controller_restart_agents_back_s"]["max"] <= 5.0, report["events"]
    assert out.returncode == 0, out.stdout[-3000:]
