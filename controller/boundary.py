"""The one interceptor at the controller's gRPC boundary.

It does two things for every call:

1. Authentication. ``AgentService`` calls need an agent credential (the shared agent token or a
   per-agent token: ``identity.py``) and ``FleetService`` and ``PredictorService`` calls the API token,
   as ``authorization: Bearer <token>`` metadata. A missing or wrong token ends the call with
   ``UNAUTHENTICATED`` and a token of the other kind with ``PERMISSION_DENIED``, before any handler
   runs; each refusal is logged (rate-limited, never the token). A per-agent token is checked against
   the store by the gateway, which also binds it to its agent. Health and reflection stay open so that
   standard gRPC tools work. With no token configured for a service (and, for agents, no per-agent
   token issued), that service is open (for loopback and trusted networks; the controller logs a warning).
2. Errors. A :class:`~fleetmeter.errors.FleetmeterError` becomes its status
   code with its message (and its trailing metadata: ``ModelNotFound``'s
   ``fleetmeter-not-found: model``), and so does an ``ImportError`` of an optional library
   (``FAILED_PRECONDITION`` naming the extra to install: ``_extras.py``); anything else becomes ``INTERNAL`` with a generic
   message, and the traceback goes to the log.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

import grpc

from fleetmeter._extras import missing_extra
from fleetmeter._rpc import status_code_for, trailing_metadata_for
from fleetmeter.errors import FleetmeterError

from .identity import AgentDoor, RefusalLog, same

log = logging.getLogger(__name__)

AGENT_PREFIX = "/fleetmeter.v1.AgentService/"
FLEET_PREFIX = "/fleetmeter.v1.FleetService/"
PREDICTOR_PREFIX = "/fleetmeter.v1.PredictorService/"


def _token_from(metadata) -> Optional[str]:
    for item in metadata or ():
        key, value = (item.key, item.value) if hasattr(item, "key") else item
        if key.lower() == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return None


async def _map_errors(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    exc = missing_extra(exc, "this controller") or exc  # an optional library it lacks: name the extra
    if isinstance(exc, FleetmeterError):
        await context.abort(status_code_for(exc), str(exc) or exc.code_name, trailing_metadata_for(exc))
    log.error("internal error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error in the controller (details in its log)")


def _passes_through(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)) or not isinstance(exc, Exception)


MISSING = ("missing token: agents set --agent-token or $FLEETMETER_AGENT_TOKEN, callers --api-token or "
           "$FLEETMETER_API_TOKEN (sent as 'authorization: Bearer <token>' metadata)")
Denial = Optional[tuple[grpc.StatusCode, str]]


class BoundaryInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, door: AgentDoor, api_token: Optional[str], refusals: Optional[RefusalLog] = None) -> None:
        self.door = door
        self.api_token = api_token or None
        self.refusals = refusals or RefusalLog()

    def _denial(self, method: str, given: Optional[str]) -> Denial:
        if method.startswith(AGENT_PREFIX):
            kind = self.door.kind(given)
            if kind not in ("missing", "unknown"):
                return None
            if given is not None and same(given, self.api_token):
                return (grpc.StatusCode.PERMISSION_DENIED,
                        "this is the API token; agents authenticate with an agent token (--agent-token)")
            return grpc.StatusCode.UNAUTHENTICATED, MISSING if given is None else (
                "wrong agent token (check --agent-token / $FLEETMETER_AGENT_TOKEN on the agent)")
        if not self.api_token:
            return None
        if given is None:
            return grpc.StatusCode.UNAUTHENTICATED, MISSING
        if same(given, self.api_token):
            return None
        if self.door.kind(given) in ("shared", "agent"):
            return (grpc.StatusCode.PERMISSION_DENIED,
                    "this is an agent token; callers authenticate with the API token (--api-token)")
        return grpc.StatusCode.UNAUTHENTICATED, "wrong token (check --api-token / $FLEETMETER_API_TOKEN)"

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        if not method.startswith((AGENT_PREFIX, FLEET_PREFIX, PREDICTOR_PREFIX)):
            return handler  # health, reflection: untouched
        denied = self._denial(method, _token_from(details.invocation_metadata))
        return _wrap(handler, method, denied, self.refusals)


def _wrap(handler: grpc.RpcMethodHandler, method: str, denied: Denial, refusals: RefusalLog) -> grpc.RpcMethodHandler:
    streaming_out = handler.response_streaming
    behavior = (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)

    async def refuse(context) -> None:
        code, reason = denied
        refusals.note(context.peer() or "", method, reason)
        await context.abort(code, f"{method}: {reason}")

    if streaming_out:
        async def wrapped(request, context):
            if denied:
                await refuse(context)
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:  # noqa: BLE001 - mapped or re-raised
                if _passes_through(exc):
                    raise
                await _map_errors(context, exc, method)
    else:
        async def wrapped(request, context):
            if denied:
                await refuse(context)
            try:
                return await behavior(request, context)
            except BaseException as exc:  # noqa: BLE001
                if _passes_through(exc):
                    raise
                await _map_errors(context, exc, method)

    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(wrapped, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)
