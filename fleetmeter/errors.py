"""The fleetmeter exception tree and its one mapping to gRPC status codes.

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

Anything else raised inside a servicer becomes ``INTERNAL`` with a generic
message, and its traceback goes to the log. On the client side
:func:`from_rpc_error` turns a status back into the same exception class.
``ModelNotFound`` is told apart from the other ``NOT_FOUND`` (an unknown
platform, which is final) by its trailing metadata, not by its message: the
caller answers it by sending the model.
"""
from __future__ import annotations

import grpc

__all__ = [
    "FleetmeterError", "InvalidArgument", "NotFound", "FailedPrecondition", "ResourceExhausted",
    "Unavailable", "Aborted", "Unauthenticated", "PermissionDenied", "ModelNotFound", "NOT_FOUND_KEY",
    "status_code_for", "trailing_metadata_for", "from_rpc_error",
]

#: Trailing-metadata key of a ``NOT_FOUND`` that names what was missing (``"model"``: :class:`ModelNotFound`).
NOT_FOUND_KEY = "fleetmeter-not-found"


class FleetmeterError(Exception):
    """Base of every error fleetmeter raises on purpose."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(FleetmeterError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FleetmeterError, KeyError):
    code = grpc.StatusCode.NOT_FOUND

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


class ModelNotFound(NotFound):
    """The predictor service has neither the file nor the features of the model asked for by sha256.

    Not final: the caller sends the model (its graph or bytes) and asks again.
    """

    what = "model"


class FailedPrecondition(FleetmeterError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(FleetmeterError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(FleetmeterError):
    code = grpc.StatusCode.UNAVAILABLE


class Aborted(FleetmeterError):
    code = grpc.StatusCode.ABORTED


class Unauthenticated(FleetmeterError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FleetmeterError):
    code = grpc.StatusCode.PERMISSION_DENIED


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted,
                                      Unavailable, Aborted, Unauthenticated, PermissionDenied)}


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    return exc.code if isinstance(exc, FleetmeterError) else grpc.StatusCode.INTERNAL


def trailing_metadata_for(exc: BaseException) -> tuple:
    """The trailing metadata the status of ``exc`` carries (``((NOT_FOUND_KEY, "model"),)`` for
    :class:`ModelNotFound`, else nothing)."""
    what = getattr(exc, "what", "")
    return ((NOT_FOUND_KEY, what),) if isinstance(exc, NotFound) and what else ()


def from_rpc_error(exc: grpc.RpcError) -> FleetmeterError:
    """The fleetmeter exception for a failed call (``raise from_rpc_error(e) from e``)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "controller unavailable"
    cls = _BY_CODE.get(code, FleetmeterError)
    if code == grpc.StatusCode.NOT_FOUND and hasattr(exc, "trailing_metadata"):
        if (NOT_FOUND_KEY, ModelNotFound.what) in tuple(exc.trailing_metadata() or ()):
            cls = ModelNotFound
    err = cls(details or code.name)
    return err
