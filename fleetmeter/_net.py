"""Client-side gRPC plumbing shared by the agent and the callers: channels,
TLS credentials and bearer-token metadata. Importing it loads no grpc (the device CLI's
``bench``/``probe`` parse their flags without it); ``open_channel`` does."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import grpc


DEFAULT_CONTROLLER = "127.0.0.1:50051"
# gRPC's default receive limit is 4 MB; models travel in 1 MiB chunks, but a
# measurement with many samples can be large too.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS. On a client: ``ca`` verifies the server; ``cert``/``key``
    make it mutual. On the server: ``cert``/``key``; ``ca`` requires client certs."""

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        for path in (self.ca, self.cert, self.key):
            if path and not Path(path).is_file():
                raise ValueError(f"TLS file not found: {path}")

    @property
    def enabled(self) -> bool:
        return bool(self.ca or self.cert)


def env(name: str, default: Optional[str] = None) -> Optional[str]:
    """The one place fleetmeter reads its environment variables."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def controller_address(explicit: Optional[str] = None) -> str:
    return explicit or env("FLEETMETER_CONTROLLER", DEFAULT_CONTROLLER)


def api_token(explicit: Optional[str] = None) -> Optional[str]:
    return explicit or env("FLEETMETER_API_TOKEN")


def agent_token(explicit: Optional[str] = None) -> Optional[str]:
    return explicit or env("FLEETMETER_AGENT_TOKEN")


#: A caller's TLS files when no flag or argument names them (``TlsFiles`` field -> variable).
TLS_ENV = {"ca": "FLEETMETER_TLS_CA", "cert": "FLEETMETER_TLS_CERT", "key": "FLEETMETER_TLS_KEY"}


def caller_tls(ca: Optional[str] = None, cert: Optional[str] = None, key: Optional[str] = None) -> TlsFiles:
    """A caller's TLS files: each one given, else its ``FLEETMETER_TLS_*`` variable (none set: plain text).
    ValueError naming the variable when a file it names is missing."""
    chosen = {"ca": ca, "cert": cert, "key": key}
    for field_name, variable in TLS_ENV.items():
        if chosen[field_name]:
            continue
        chosen[field_name] = env(variable)
        if chosen[field_name] and not Path(chosen[field_name]).is_file():
            raise ValueError(f"TLS file not found: {chosen[field_name]} (from ${variable})")
    if bool(chosen["cert"]) != bool(chosen["key"]):
        raise ValueError("TLS needs both a client certificate and its key (--tls-cert / $FLEETMETER_TLS_CERT "
                         "and --tls-key / $FLEETMETER_TLS_KEY)")
    return TlsFiles(**chosen)


def bearer(token: Optional[str]) -> tuple:
    return (("authorization", f"Bearer {token}"),) if token else ()


def open_channel(address: str, tls: Optional[TlsFiles] = None) -> "grpc.Channel":
    """A channel to ``address``; TLS when ``tls.ca`` (or client certs) are given, else plain text."""
    import grpc

    if tls is not None and tls.enabled:
        def read(p):
            return Path(p).read_bytes() if p else None
        creds = grpc.ssl_channel_credentials(read(tls.ca), read(tls.key), read(tls.cert))
        return grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
