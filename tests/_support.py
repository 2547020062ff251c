"""Helpers shared by tests/unit and tests/integration (``tests/`` is on ``sys.path`` via pytest's
``pythonpath`` setting in pyproject.toml, so both import this as ``_support``)."""
from __future__ import annotations

import contextlib
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from fleetmeter.local_fleet import LocalFleet

__all__ = ["FakeClock", "e2e_fleet"]


class FakeClock:
    """A clock (seconds; unix or monotonic, whatever the code under test expects) that moves only when a
    test says so: :meth:`advance` / :meth:`advance_ms`, and, when ``step_s`` is set, by ``step_s`` on every
    read (the first read returns ``start_s + step_s``), so code that reads the clock repeatedly sees time
    pass without a sleep. Safe to read from a background thread (a sampling sensor)."""

    def __init__(self, start_s: float = 100.0, step_s: float = 0.0) -> None:
        self.now_s = start_s
        self.step_s = step_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now_s += self.step_s
            return self.now_s

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        with self._lock:
            self.now_s += seconds
            return self.now_s

    def advance_ms(self, ms: float) -> float:
        return self.advance(ms / 1000.0)


@contextlib.contextmanager
def e2e_fleet(root: Path) -> Iterator[LocalFleet]:
    """A real controller (local Ray, SQLite) under ``root`` with two real agents, one thread each:
    onnxruntime (``"ort"``) and LiteRT (``"lite"``), both labelled ``role=e2e``; stopped on exit."""
    from fleetmeter.local_fleet import LocalFleet  # here: the unit tests that import this module start no fleet

    fleet = LocalFleet(root, agent_token=secrets.token_hex(8), api_token=secrets.token_hex(8),
                       lease_timeout_s=6.0, heartbeat_s=1.0)
    try:
        fleet.start_controller()
        fleet.start_agent("ort", "--runtime", "onnxruntime", "--threads", "1", "--label", "role=e2e")
        fleet.start_agent("lite", "--runtime", "litert", "--threads", "1", "--label", "role=e2e")
        fleet.wait_agents_connected(["ort", "lite"])
        yield fleet
    finally:
        fleet.close()
