"""The fleetmeter exception tree: pure Python, importable anywhere (no grpc).

::

    FleetmeterError
    ├── InvalidArgument      bad input (a malformed sweep, a corrupt upload)  → INVALID_ARGUMENT
    ├── NotFound             unknown id (model, platform, sweep)               → NOT_FOUND
    │   └── ModelNotFound    a model asked for by sha256 that the predictor     → NOT_FOUND + trailing
    │                        service has neither the file nor the features of     metadata NOT_FOUND_KEY: model
    ├── FailedPrecondition   missing runtime/delegate, nothing to train on     → FAILED_PRECONDITION
    ├── ResourceExhausted    busy                                              → RESOURCE_EXHAUSTED
    ├── Unavailable          draining / cooling / controller away              → UNAVAILABLE
    ├── Aborted              lost lease                                        → ABORTED
    ├── Unauthenticated      missing or wrong token                            → UNAUTHENTICATED
    └── PermissionDenied     a token of the wrong kind                         → PERMISSION_DENIED

Each class names its gRPC status in ``code_name`` (a string, e.g.
``"INVALID_ARGUMENT"``). The one mapping to ``grpc.StatusCode`` lives in the
RPC layer, :mod:`fleetmeter._rpc`: the server's interceptor
(``controller/boundary.py``) aborts with it, and on the client side
:func:`fleetmeter._rpc.from_rpc_error` turns a status back into the same
exception class. Anything else raised inside a servicer becomes ``INTERNAL``
with a generic message, and its traceback goes to the log. ``ModelNotFound``
is told apart from the other ``NOT_FOUND`` (an unknown platform, which is
final) by its trailing metadata (:data:`NOT_FOUND_KEY`), not by its message:
the caller answers it by sending the model.
"""
from __future__ import annotations

import re

__all__ = [
    "FleetmeterError", "InvalidArgument", "NotFound", "FailedPrecondition", "ResourceExhausted",
    "Unavailable", "Aborted", "Unauthenticated", "PermissionDenied", "ModelNotFound", "NOT_FOUND_KEY",
    "error_class_for",
]

#: Trailing-metadata key of a ``NOT_FOUND`` that names what was missing (``"model"``: :class:`ModelNotFound`).
NOT_FOUND_KEY = "fleetmeter-not-found"


class FleetmeterError(Exception):
    """Base of every error fleetmeter raises on purpose.

    Each class of the tree is named after its gRPC status code, and a direct
    subclass's ``code_name`` is that name in upper snake case
    (``FailedPrecondition`` -> ``"FAILED_PRECONDITION"``); deeper classes
    (:class:`ModelNotFound`) keep their parent's.
    """

    #: The name of the gRPC status code this error travels as (``grpc.StatusCode[code_name]``).
    code_name = "UNKNOWN"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if FleetmeterError in cls.__bases__:
            cls.code_name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).upper()


class InvalidArgument(FleetmeterError, ValueError):
    """Bad input: a malformed sweep, a corrupt upload, a value out of range."""


class NotFound(FleetmeterError, KeyError):
    """An unknown id: a model, a platform, a sweep."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


class ModelNotFound(NotFound):
    """The predictor service has neither the file nor the features of the model asked for by sha256.

    Not final: the caller sends the model (its graph or bytes) and asks again.
    """

    what = "model"


class FailedPrecondition(FleetmeterError):
    """Cannot be done as things stand: a missing runtime or delegate, nothing to train on."""


class ResourceExhausted(FleetmeterError):
    """Busy: try again later."""


class Unavailable(FleetmeterError):
    """Draining, cooling down, or the controller is away."""


class Aborted(FleetmeterError):
    """The lease was lost: the job is no longer this agent's."""


class Unauthenticated(FleetmeterError):
    """A missing or wrong token."""


class PermissionDenied(FleetmeterError):
    """A token of the wrong kind for what was asked."""


_BY_CODE_NAME = {cls.code_name: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted,
                                                Unavailable, Aborted, Unauthenticated, PermissionDenied)}


def error_class_for(code_name: str, model_not_found: bool = False) -> type:
    """The exception class of a status code name (``"NOT_FOUND"``; :class:`ModelNotFound` when
    ``model_not_found``); :class:`FleetmeterError` for a name outside the tree (``"INTERNAL"``, ...)."""
    if model_not_found and code_name == NotFound.code_name:
        return ModelNotFound
    return _BY_CODE_NAME.get(code_name, FleetmeterError)
