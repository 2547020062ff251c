"""Who an agent is: credentials, their kinds, and refused authentications.

The controller decides identity, never the message (docs/security.md):

- **Enrolment.** An agent presents the shared agent token (``--agent-token``), a
  per-agent token issued by an operator (``fleetmeter agents token create``), or
  nothing when the agent door is open (no shared token configured and no per-agent
  token issued). Its hello carries ``agent_secret``, a random secret kept in its
  data dir: the first hello of an ``agent_id`` binds the id to the secret's hash,
  and every later hello for that id must carry the same secret. A token alone is
  not a master key: it cannot take over another agent's id.
- **Per-agent tokens** are bound to one agent id (at creation, or by their first
  hello). Only their sha256 is stored; revoking one disconnects its agent.
- **Wrong-kind tokens** (an API token on the agent service, an agent token on the
  fleet or predictor service) get ``PERMISSION_DENIED``; a missing or unknown
  token ``UNAUTHENTICATED``. Refusals are logged, rate-limited, never the token.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)

#: Per-agent tokens start with this, so that a service can tell their kind without a lookup.
AGENT_TOKEN_PREFIX = "fma_"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_agent_token() -> tuple[str, str]:
    """``(token_id, token)``: the id is public (listings, revocation), the token is the secret."""
    token_id = "at-" + secrets.token_hex(6)
    return token_id, f"{AGENT_TOKEN_PREFIX}{token_id[3:]}_{secrets.token_urlsafe(32)}"


def same(a: Optional[str], b: Optional[str]) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


class AgentDoor:
    """What the agent service accepts, shared by the interceptor and the gateway.

    ``has_tokens`` mirrors the store (the gateway sets it at start and on every create or revoke):
    once a per-agent token exists, a controller without a shared agent token stops being open to agents.
    """

    def __init__(self, shared_token: Optional[str]) -> None:
        self.shared_token = shared_token or None
        self.has_tokens = False

    @property
    def open(self) -> bool:
        return self.shared_token is None and not self.has_tokens

    def kind(self, token: Optional[str]) -> str:
        """``"shared"``, ``"agent"`` (a per-agent token, still to be checked against the store), ``"none"``
        (no token, on an open door) or ``"unknown"``."""
        if token is None:
            return "none" if self.open else "missing"
        if self.shared_token and same(token, self.shared_token):
            return "shared"
        if token.startswith(AGENT_TOKEN_PREFIX):
            return "agent"
        return "none" if self.open else "unknown"


class RefusalLog:
    """Log refused authentications at most once per ``period_s`` per (peer host, reason), with a count of
    the ones held back. The token itself never reaches the log."""

    def __init__(self, period_s: float = 10.0, clock=time.monotonic) -> None:
        self.period_s = period_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def note(self, peer: str, method: str, reason: str) -> bool:
        """Record one refusal; ``True`` when it was logged."""
        host = peer.rsplit(":", 1)[0] if peer else "?"
        key = (host, reason)
        now = self.clock()
        with self._lock:
            if now - self._last.get(key, -1e18) < self.period_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            held = self._held.pop(key, 0)
            self._last[key] = now
            if len(self._last) > 10_000:  # a scan from many addresses must not grow this without bound
                self._last = {k: v for k, v in self._last.items() if now - v < self.period_s}
        log.warning("refused %s from %s: %s%s", method, host, reason,
                    f" (and {held} more like it in the last {self.period_s:.0f} s)" if held else "")
        return True
