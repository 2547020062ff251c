"""fleetmeter: what will this neural network cost — latency, energy, memory — on each of my devices?

Nothing heavy happens at import time: a device imports ``fleetmeter.agent``
without pulling in the controller, Ray or the modeler. Search loops:
``Client.predict_batch``, ``Client.results_df`` / ``predictions_df`` (pandas) and
:mod:`fleetmeter.optuna` (budgets on predicted costs as Optuna constraints).
"""


def _prefer_the_installed_copy() -> None:
    """Keep a source checkout from shadowing an installed fleetmeter.

    A checkout's ``fleetmeter/`` folder holds only the top and core modules (``pyproject.toml`` maps
    ``fleetmeter.agent``/``controller``/``modeler`` to the sibling folders). With the checkout's root on
    ``sys.path`` — ``python -m`` run inside it (the agent's worker, the local fleet's processes), Ray
    workers (Ray adds the driver's working directory to their path) — that folder is found first and
    ``fleetmeter.modeler`` does not import. When a regular install of fleetmeter is on the rest of the
    path, the package takes its modules from there. An editable install (its finder maps the
    subpackages to this checkout) and a plain installed copy (its subpackages inside) are left alone.
    """
    import os
    import sys
    from importlib.machinery import PathFinder

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isdir(os.path.join(here, "agent")) or not os.path.isfile(os.path.join(root, "pyproject.toml")):
        return
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = PathFinder.find_spec(__name__, rest)
    installed = list(spec.submodule_search_locations or ()) if spec is not None else []
    if any(os.path.isdir(os.path.join(p, "agent")) for p in installed):
        __path__[:] = installed  # noqa: F821 - a package's own search path


_prefer_the_installed_copy()

from fleetmeter._version import __version__  # noqa: E402 - after the checkout guard

__all__ = ["__version__", "FleetClient", "Client", "Prediction", "TlsFiles", "predict", "search"]


def __getattr__(name: str):
    if name == "search":  # hardware-aware search (fleetmeter.hwsearch; needs the optuna and zoo extras)
        from fleetmeter.hwsearch import search

        return search
    if name in ("FleetClient", "Client", "Prediction", "TlsFiles", "predict"):
        from fleetmeter import client

        return getattr(client, name)
    raise AttributeError(f"module 'fleetmeter' has no attribute {name!r}")
