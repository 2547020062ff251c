"""Shared fixtures for the controller/agent state tests: a fake clock and a store on tmp_path."""
from __future__ import annotations

import pytest

from fleetmeter.controller.store import Store


class FakeClock:
    """Unix seconds that move only when a test says so (no sleeps anywhere)."""

    def __init__(self, start_s: float = 1_000_000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> float:
        self.now_s += seconds
        return self.now_s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "controller" / "fleetmeter.sqlite"


@pytest.fixture
def store(db_path):
    s = Store(db_path)
    yield s
    s.close()
