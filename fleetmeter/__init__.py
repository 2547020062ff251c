"""fleetmeter: what will this neural network cost — latency, energy, memory — on each of my devices?

Nothing heavy happens at import time: a device imports ``fleetmeter.agent``
without pulling in the controller, Ray or the modeler.
"""
from fleetmeter._version import __version__

__all__ = ["__version__", "FleetClient", "Client", "Prediction", "predict"]


def __getattr__(name: str):
    if name in ("FleetClient", "Client", "Prediction", "predict"):
        from fleetmeter import client

        return getattr(client, name)
    raise AttributeError(f"module 'fleetmeter' has no attribute {name!r}")
