"""Shared integration fixtures."""
from __future__ import annotations

import pytest

from _support import e2e_fleet  # tests/ is on sys.path (pyproject: pythonpath)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """A real controller (local Ray, SQLite) with two real agents: onnxruntime ("ort") and LiteRT ("lite"),
    shared by the modules that do not change fleet-wide state they assert on."""
    with e2e_fleet(tmp_path_factory.mktemp("fleet")) as f:
        yield f
