"""The console scripts ``fleetmeter`` and ``fleetmeter-agent`` (``[project.scripts]`` in ``pyproject.toml``).

A bare ``pip install fleetmeter`` brings no gRPC, protobuf or numpy. Instead of a traceback, a command
whose libraries are missing prints one line naming the extra to add and exits 2 (like bad usage: the
install, not the controller, said no). Anything else behaves exactly like ``fleetmeter.cli:main`` /
``fleetmeter.agent.cli:main``.
"""
from __future__ import annotations

import sys
from typing import Callable

from fleetmeter._extras import missing_extra

__all__ = ["EXIT_MISSING_EXTRA", "fleetmeter", "fleetmeter_agent"]

EXIT_MISSING_EXTRA = 2
_WHAT = {"agent": "its client libraries (gRPC, protobuf, numpy)",
         "controller": "the controller's libraries (Ray, LightGBM, SciPy, ONNX)"}


def _run(prog: str, load: Callable[[], Callable[[], int]]) -> int:
    try:
        return load()()
    except ImportError as exc:
        found = missing_extra(exc)
        if found is None:
            raise
        what = _WHAT.get(found.extra, found.module)
        print(f"{prog} needs {what}: pip install 'fleetmeter[{found.extra}]' (no module {found.module!r} here)",
              file=sys.stderr)
        return EXIT_MISSING_EXTRA


def fleetmeter() -> int:
    """``fleetmeter``: :func:`fleetmeter.cli.main`."""
    def load():
        from fleetmeter.cli import main

        return main
    return _run("fleetmeter", load)


def fleetmeter_agent() -> int:
    """``fleetmeter-agent``: :func:`fleetmeter.agent.cli.main`."""
    def load():
        from fleetmeter.agent.cli import main

        return main
    return _run("fleetmeter-agent", load)
