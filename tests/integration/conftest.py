"""Shared integration fixtures."""
from __future__ import annotations

import secrets

import pytest

from fleetmeter.local import LocalFleet


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """A real controller (local Ray, SQLite) with two real agents: onnxruntime (t1) and LiteRT (t1)."""
    root = tmp_path_factory.mktemp("fleet")
    f = LocalFleet(root, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                   lease_timeout_s=6.0, heartbeat_s=1.0)
    try:
        f.start_controller()
        f.start_agent("ort", "--runtime", "onnxruntime", "--threads", "1", "--label", "role=e2e")
        f.start_agent("lite", "--runtime", "litert", "--threads", "1", "--label", "role=e2e")
        f.wait_agents_connected(["ort", "lite"])
        yield f
    finally:
        f.close()


