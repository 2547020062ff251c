"""The fleetmeter exception tree and its one mapping to gRPC status codes.

::

    FleetmeterError
    ├── InvalidArgument      bad input (a malformed sweep, a corrupt upload)  → INVALID_ARGUMENT
    ├── NotFound             unknown id (model, platform, sweep)               → NOT_FOUND
    ├── FailedPrecondition   missing runtime/delegate, nothing to train on     → FAILED_PRECONDITION
    ├── ResourceExhausted    busy                                              → RESOURCE_EXHAUSTED
    ├── Unavailable          draining / cooling / controller away              → UNAVAILABLE
    ├── Aborted              lost lease                                        → ABORTED
    ├── Unauthenticated      missing or wrong token                            → UNAUTHENTICATED
    └── PermissionDenied     a token of the wrong kind                         → PERMISSION_DENIED

Anything else raised inside a servicer becomes ``INTERNAL`` with a generic
message, and its traceback goes to the log. On the client side
:func:`from_rpc_error` turns a status back into the same exception class.
"""
from __future__ import annotations

import grpc

__all__ = [
    "FleetmeterError", "InvalidArgument", "NotFound", "FailedPrecondition", "ResourceExhausted",
    "Unavailable", "Aborted", "Unauthenticated", "PermissionDenied", "status_code_for", "from_rpc_error",
]


class FleetmeterError(Exception):
    """Base of every error fleetmeter raises on purpose."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(FleetmeterError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FleetmeterError, KeyError):
    code = grpc.StatusCode.NOT_FOUND

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


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


def from_rpc_error(exc: grpc.RpcError) -> FleetmeterError:
    """The fleetmeter exception for a failed call (``raise from_rpc_error(e) from e``)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "controller unavailable"
    err = _BY_CODE.get(code, FleetmeterError)(details or code.name)
    return err
