"""The exception tree of :mod:`fleetmeter.errors` at the gRPC boundary: the one mapping between its
``code_name`` strings and ``grpc.StatusCode``, in both directions.

Server side: ``controller/boundary.py``'s interceptor aborts with :func:`status_code_for` and
:func:`trailing_metadata_for`. Client side: ``fleetmeter/client.py`` raises :func:`from_rpc_error`.
"""
from __future__ import annotations

from typing import Optional

import grpc

from fleetmeter.errors import NOT_FOUND_KEY, FleetmeterError, ModelNotFound, NotFound, error_class_for

__all__ = ["status_code_for", "trailing_metadata_for", "from_rpc_error", "connection_hint"]


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    """The status a raised exception travels as: its class's ``code_name``, ``INTERNAL`` for anything else."""
    return grpc.StatusCode[exc.code_name] if isinstance(exc, FleetmeterError) else grpc.StatusCode.INTERNAL


def trailing_metadata_for(exc: BaseException) -> tuple:
    """The trailing metadata the status of ``exc`` carries (``((NOT_FOUND_KEY, "model"),)`` for
    :class:`ModelNotFound`, else nothing)."""
    what = getattr(exc, "what", "")
    return ((NOT_FOUND_KEY, what),) if isinstance(exc, NotFound) and what else ()


#: What a failed connection's details say, and what to tell the caller: ``(substring, tls, hint)``; ``tls``: only
#: when the caller used TLS (True), only when it did not (False), either way (None). gRPC's words for the two
#: mismatches: a plain-text client at a TLS port sees "Socket closed", a TLS client at a plain-text port a
#: handshake that fails on "WRONG_VERSION_NUMBER".
CONNECTION_HINTS = (
    ("Socket closed", False, "the controller may be using TLS: pass --tls-ca CA.pem or set FLEETMETER_TLS_CA"),
    ("WRONG_VERSION_NUMBER", True, "the controller may not be using TLS: leave out --tls-ca and FLEETMETER_TLS_CA"),
    ("Connection refused", None, "is `fleetmeter controller` running at that address? It comes from --controller "
                                 "or FLEETMETER_CONTROLLER"),
)


def connection_hint(details: str, tls: Optional[bool]) -> str:
    """The hint (see :data:`CONNECTION_HINTS`) for an UNAVAILABLE call's ``details``, or ``""``. ``tls``:
    whether the caller used TLS (None: unknown, and no TLS hint)."""
    for needle, when_tls, hint in CONNECTION_HINTS:
        if needle in details and (when_tls is None or when_tls is tls):
            return hint
    return ""


def from_rpc_error(exc: grpc.RpcError, tls: Optional[bool] = None) -> FleetmeterError:
    """The fleetmeter exception for a failed call (``raise from_rpc_error(e) from e``). ``tls``: whether the
    channel used TLS, for the hint on a connection that failed (:func:`connection_hint`)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "controller unavailable"
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = connection_hint(details, tls)
        details = f"{details} ({hint})" if hint else details
    model_not_found = False
    if code == grpc.StatusCode.NOT_FOUND and hasattr(exc, "trailing_metadata"):
        model_not_found = (NOT_FOUND_KEY, ModelNotFound.what) in tuple(exc.trailing_metadata() or ())
    return error_class_for(code.name, model_not_found)(details or code.name)
