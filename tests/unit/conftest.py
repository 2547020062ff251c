"""Shared fixtures for the controller/agent state tests: a fake clock and a store on tmp_path."""
from __future__ import annotations

import pytest

from fleetmeter.controller.store import Store

from _support import FakeClock  # tests/ is on sys.path (pyproject: pythonpath)


@pytest.fixture
def clock() -> FakeClock:
    """Unix seconds (from 1,000,000) that move only by ``clock.advance(seconds)``."""
    return FakeClock(start_s=1_000_000.0)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "controller" / "fleetmeter.sqlite"


@pytest.fixture
def store(db_path):
    s = Store(db_path)
    yield s
    s.close()
