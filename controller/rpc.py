"""The one interceptor at the controller's gRPC boundary.

It does two things for every call:

1. Authentication. ``AgentService`` calls need the agent token and
   ``FleetService`` and ``PredictorService`` calls the API token, as ``authorization: Bearer <token>``
   metadata. A missing or wrong token ends the call with ``UNAUTHENTICATED``
   before any handler runs. Health and reflection stay open so that standard
   gRPC tools work. With no token configured for a service, that service is
   open (for loopback and trusted networks; the controller logs a warning).
2. Errors. A :class:`~fleetmeter.errors.FleetmeterError` becomes its status
   code with its message (and its trailing metadata: ``ModelNotFound``'s
   ``fleetmeter-not-found: model``); anything else becomes ``INTERNAL`` with a generic
   message, and the traceback goes to the log.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Optional

import grpc

from fleetmeter.errors import FleetmeterError, trailing_metadata_for

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
    if isinstance(exc, FleetmeterError):
        await context.abort(exc.code, str(exc) or exc.code.name, trailing_metadata_for(exc))
    log.error("internal error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error in the controller (details in its log)")


def _passes_through(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)) or not isinstance(exc, Exception)


class BoundaryInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, agent_token: Optional[str], api_token: Optional[str]) -> None:
        self._tokens = {AGENT_PREFIX: agent_token, FLEET_PREFIX: api_token, PREDICTOR_PREFIX: api_token}

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        expected = next((tok for prefix, tok in self._tokens.items() if method.startswith(prefix)), None)
        denied = None
        if expected:
            given = _token_from(details.invocation_metadata)
            if given is None:
                denied = "missing token: send 'authorization: Bearer <token>' metadata"
            elif not hmac.compare_digest(given.encode(), expected.encode()):
                denied = "wrong token"
        if not method.startswith(tuple(self._tokens)) and denied is None:
            return handler  # health, reflection: untouched
        return _wrap(handler, method, denied)


def _wrap(handler: grpc.RpcMethodHandler, method: str, denied: Optional[str]) -> grpc.RpcMethodHandler:
    streaming_out = handler.response_streaming
    behavior = (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)

    if streaming_out:
        async def wrapped(request, context):
            if denied:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{method}: {denied}")
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
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{method}: {denied}")
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
