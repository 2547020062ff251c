"""Which extra installs which optional library, and the error that names it.

Optional libraries are imported on first use. When one is missing the caller learns which extra to
install (``pip install 'fleetmeter[controller]'``), never a bare ``ModuleNotFoundError``:

* :func:`require` imports a library or raises :class:`MissingExtra`, a
  :class:`~fleetmeter.errors.FailedPrecondition` (and an ``ImportError``), so the controller's boundary
  answers ``FAILED_PRECONDITION`` with the message;
* :func:`missing_extra` turns an ``ImportError`` raised anywhere (a plain ``import scipy`` deep in the
  modeler) into the same error, when the missing module is one of :data:`EXTRA_OF`; the boundary and
  the console scripts (``fleetmeter/_launch.py``) use it.

Core layer: pure Python, standard library only.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from fleetmeter.errors import FailedPrecondition

__all__ = ["EXTRA_OF", "MissingExtra", "require", "missing_extra"]

#: Top-level module → the extra of ``pyproject.toml`` that installs it.
EXTRA_OF = {
    "grpc": "agent", "grpc_health": "agent", "grpc_reflection": "agent", "google": "agent", "numpy": "agent",
    "onnxruntime": "onnx", "ai_edge_litert": "tflite", "tflite_runtime": "tflite", "pynvml": "nvml",
    "ray": "controller", "lightgbm": "controller", "scipy": "controller", "onnx": "controller",
    "yaml": "controller", "tomli": "controller", "flatbuffers": "zoo",
    "pandas": "data", "pyarrow": "data", "optuna": "optuna", "plotly": "report",
}


class MissingExtra(FailedPrecondition, ImportError):
    """An optional library is not installed here; ``extra`` names the extra that brings it."""

    def __init__(self, module: str, extra: str, purpose: str = "fleetmeter") -> None:
        self.module, self.extra, self.purpose = module, extra, purpose
        super().__init__(f"{purpose} needs {module}, which is not installed here: pip install 'fleetmeter[{extra}]'")

    def __reduce__(self):  # crosses Ray's task boundary pickled; args alone would not rebuild it
        return type(self), (self.module, self.extra, self.purpose)


def require(module: str, purpose: str = "fleetmeter") -> ModuleType:
    """``importlib.import_module(module)``; :class:`MissingExtra` (naming the extra) when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        found = missing_extra(exc, purpose)
        if found is None:
            raise
        raise found from exc
    except OSError as exc:  # installed, but a shared library it loads is not (LightGBM without libgomp1)
        raise FailedPrecondition(f"{purpose} needs {module}, which is installed but does not load: {exc}") from exc


def missing_extra(exc: BaseException, purpose: str = "fleetmeter") -> Optional[MissingExtra]:
    """The :class:`MissingExtra` that ``exc`` (or an exception it was raised from) stands for: a
    ``MissingExtra`` itself, or an ``ImportError`` of a module in :data:`EXTRA_OF`; None otherwise."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, MissingExtra):
            return exc
        root = (getattr(exc, "name", None) or "").split(".")[0] if isinstance(exc, ImportError) else ""
        if root in EXTRA_OF:
            return MissingExtra(root, EXTRA_OF[root], purpose)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
