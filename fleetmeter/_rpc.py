"""The exception tree of :mod:`fleetmeter.errors` at the gRPC boundary: the one mapping between its
``code_name`` strings and ``grpc.StatusCode``, in both directions.

Server side: ``controller/boundary.py``'s interceptor aborts with :func:`status_code_for` and
:func:`trailing_metadata_for`. Client side: ``fleetmeter/client.py`` raises :func:`from_rpc_error`.
"""
from __future__ import annotations

import grpc

from fleetmeter.errors import NOT_FOUND_KEY, FleetmeterError, ModelNotFound, NotFound, error_class_for

__all__ = ["status_code_for", "trailing_metadata_for", "from_rpc_error"]


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    """The status a raised exception travels as: its class's ``code_name``, ``INTERNAL`` for anything else."""
    return grpc.StatusCode[exc.code_name] if isinstance(exc, FleetmeterError) else grpc.StatusCode.INTERNAL


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
    model_not_found = False
    if code == grpc.StatusCode.NOT_FOUND and hasattr(exc, "trailing_metadata"):
        model_not_found = (NOT_FOUND_KEY, ModelNotFound.what) in tuple(exc.trailing_metadata() or ())
    return error_class_for(code.name, model_not_found)(details or code.name)
