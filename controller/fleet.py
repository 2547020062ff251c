"""Fleet registry and sweep scheduler: plain Python over a :class:`Store`.

The controller runs one ``Fleet`` inside a Ray actor (see ``engine.py``), so
its methods are called one at a time; tests drive it directly.

Job state machine (durable, in the store)::

    pending ──lease──▶ leased ──result──▶ done | failed
       ▲                 │
       └──lease expired / agent restarted (attempts < max) ─┘   (else → failed)

Rules:
- At most one job per agent at a time, and agents that report the same
  physical host (``host_id``) never measure at the same time.
- Among idle agents of one host, the job order decides who goes next (highest
  sweep priority, then oldest sweep, then job order), so no agent starves.
- A leased job's lease is extended by the agent's heartbeats; one whose agent
  went silent for ``lease_timeout_s`` returns to the queue.
- After a controller restart every open lease gets a fresh ``lease_timeout_s``
  of grace, so agents that reconnect in time keep their jobs.
- A sweep re-measures a sample of its (model, platform) pairs once more, in one
  extra round after all its other jobs (``repeat_sample``); each job's kind
  (``""``, ``"repeat_sample"``, ``"reference"``) is derived here and stored
  with its reading. The drift canary's reference jobs (``reference.py``) are
  scheduled on every dispatch round and go before every sweep's jobs.
- ``list_platforms`` adds each platform's live noise ceiling and its canary's
  latest reading (``quality.py``), cached per platform until a reading of that
  platform is stored.
"""
from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from fleetmeter.records import AgentId, PlatformId, SweepId, TokenId

from . import limits, quality
from .identity import new_agent_token, same, sha256_text
from .platforms import RUNTIME_FOR_FORMAT, make_platform
from .reference import ReferenceCanary
from .store import Store

log = logging.getLogger(__name__)

# Failures that say "this model cannot run on this platform": they count towards the sweep's
# max_device_failures. Every other failure kind (model_unavailable, agent_error, runtime_error,
# out_of_memory) may be passing, and its job is retried up to max_attempts.
DETERMINISTIC_FAILURES = ("load_error", "unsupported_op", "invalid_input", "runtime_missing")


@dataclass
class AgentState:
    agent_id: str
    name: str
    host_id: str
    platform_ids: list[str]
    connected: bool = True
    last_seen_unix: float = 0.0
    idle_since_unix: float = 0.0
    labels: dict = field(default_factory=dict)
    # Held a lease past max_job_s without a result (a hung runtime, or a squatter keeping its host busy):
    # no work until then; each overrun doubles the time.
    suspended_until_unix: float = 0.0
    suspended_reason: str = ""
    overruns: int = 0


@dataclass(frozen=True)
class FleetConfig:
    lease_timeout_s: float = 30.0
    max_attempts: int = 3
    heartbeat_interval_s: float = 2.0
    # After a controller restart, open leases wait this long for their agents to reconnect (agents
    # back off up to 30 s between attempts), so a result spooled during the outage is not run twice.
    restart_grace_s: float = 60.0
    # The drift canary: each served platform measures its reference model at most this often (and when an
    # agent serving it connects, once the last reference job is this old). 0 turns it off.
    reference_interval_s: float = 1800.0
    # A job's lease is never extended past this much time since it started, whatever the heartbeats say:
    # an agent that keeps a job (and so its host) without a result cannot starve the host.
    max_job_s: float = 3600.0
    # The most jobs one sweep may expand to (models x platforms x repeats, repeat samples aside).
    max_jobs_per_sweep: int = 100_000

    def __post_init__(self) -> None:
        if self.lease_timeout_s <= 0 or self.heartbeat_interval_s <= 0:
            raise ValueError("lease_timeout_s and heartbeat_interval_s must be positive")
        if self.heartbeat_interval_s * 2 > self.lease_timeout_s:
            raise ValueError("lease_timeout_s must be at least twice heartbeat_interval_s")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not self.max_job_s > 0:
            raise ValueError("max_job_s must be > 0")
        if not self.reference_interval_s >= 0:
            raise ValueError("reference_interval_s must be >= 0 (0 turns the drift canary off)")
        if not self.max_jobs_per_sweep >= 1:
            raise ValueError(f"max_jobs_per_sweep must be >= 1, got {self.max_jobs_per_sweep}")


def _public(token: dict) -> dict:
    """A token row as it may leave the controller: without its hash."""
    return {k: v for k, v in token.items() if k != "token_sha256"}


class Fleet:
    def __init__(self, store: Store, config: FleetConfig = FleetConfig(),
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.agents: dict[str, AgentState] = {}
        self.by_host: dict[str, dict[str, AgentState]] = {}  # host_id → its agents (index for the host rules)
        # host of every agent ever seen, also those not reconnected since a restart (their leases count)
        self.host_of: dict[str, str] = {d["agent_id"]: d["host_id"] for d in store.list_devices()}
        self.canary = ReferenceCanary(store, config.reference_interval_s)
        self._quality: dict[str, dict] = {}      # platform_id → noise ceiling and reference (until a new reading)
        self._sweep_facts: dict[str, dict] = {}  # sweep_id → what the quality rules need from its (fixed) spec
        grace = self.clock() + max(config.lease_timeout_s, config.restart_grace_s)
        for job in store.leased_jobs():
            store.extend_lease(job["job_id"], job["agent_id"], grace)

    # ------------------------------------------------------------ agents
    def register_agent(self, hello: dict, auth: Optional[dict] = None) -> dict:
        """An agent said hello. Returns ``{"agent_id", "platform_ids", "heartbeat_interval_s", "token_id"}``.

        ``auth`` says how its stream authenticated: ``{"token_sha256": ...}`` for a per-agent token (checked
        here against the store), else empty. Identity is checked before anything is written
        (:meth:`_check_identity`): a hello for an id enrolled with another secret is refused.
        """
        agent_id = hello.get("agent_id") or ""
        if not agent_id:
            raise InvalidArgument("hello without agent_id")
        limits.validate_hello(hello)
        token = self._check_identity(agent_id, hello.get("agent_secret") or "", (auth or {}).get("token_sha256"))
        device = hello.get("device") or {}
        hardware = device.get("hardware") or {}
        labels = dict(hello.get("labels") or {})
        offers = hello.get("offers") or []
        if not offers:
            raise InvalidArgument(f"agent {agent_id} offers no platform (no runtime installed?)")
        platforms = [make_platform(hardware, offer, labels) for offer in offers]
        now = self.clock()
        for p in platforms:
            self.store.upsert_platform(p, now=now)
        platform_ids = [p["platform_id"] for p in platforms]
        host_id = device.get("host_id") or device.get("hostname") or agent_id
        self.store.upsert_device(agent_id, name=hello.get("name") or agent_id, host_id=host_id,
                                 info=device, labels=labels, platform_ids=platform_ids, now=now)
        self.host_of[agent_id] = host_id
        current = hello.get("current_job_id") or None
        keep = {current, *(hello.get("spooled_job_ids") or [])}
        for job in self.store.leased_jobs():
            if job["agent_id"] == agent_id and job["job_id"] not in keep:
                state = self.store.release_job(job["job_id"], "agent restarted before finishing the job",
                                               self.config.max_attempts, now=now)
                log.info("job %s: agent %s came back without it → %s", job["job_id"], agent_id, state)
        for job_id in hello.get("spooled_job_ids") or []:
            # Its lease may have expired while the agent was cut off: the result follows this hello on the
            # same stream, so hold the job for it instead of running it again.
            job = self.store.get_job(job_id)
            if job is not None and job["state"] == "pending":
                self.store.lease_job(job_id, agent_id, now + self.config.lease_timeout_s, now=now, new_attempt=False)
                log.info("job %s: its result is spooled on agent %s; held for it", job_id, agent_id)
        if current:
            self.store.extend_lease(current, agent_id, now + self.config.lease_timeout_s, self.config.max_job_s)
        old = self.agents.get(agent_id)
        if old is not None:
            self.by_host.get(old.host_id, {}).pop(agent_id, None)
        state = AgentState(agent_id=agent_id, name=hello.get("name") or agent_id, host_id=host_id,
                           platform_ids=platform_ids, last_seen_unix=now, idle_since_unix=now, labels=labels)
        if old is not None:  # a reconnect keeps what the controller holds against it
            state.suspended_until_unix, state.suspended_reason = old.suspended_until_unix, old.suspended_reason
            state.overruns = old.overruns
        self.agents[agent_id] = state
        self.by_host.setdefault(host_id, {})[agent_id] = state
        return {"agent_id": agent_id, "platform_ids": platform_ids,
                "heartbeat_interval_s": self.config.heartbeat_interval_s,
                "token_id": token["token_id"] if token else ""}

    def _check_identity(self, agent_id: AgentId, secret: str, token_sha256: Optional[str]) -> Optional[dict]:
        """Refuse a hello that cannot prove it is ``agent_id``; enrol an id seen for the first time.
        Returns the per-agent token the stream used (bound to ``agent_id`` from now on), or ``None``."""
        if not secret:
            raise Unauthenticated(f"hello of agent {agent_id} carries no agent_secret (an agent older than this "
                                  "controller: upgrade fleetmeter on the device)")
        token = self._active_token(token_sha256) if token_sha256 else None
        if token is not None:
            if token["agent_id"] and token["agent_id"] != agent_id:
                raise PermissionDenied(f"this agent token belongs to agent {token['agent_id']}, not {agent_id}")
        own = {t["token_id"] for t in self.store.list_tokens() if t["agent_id"] == agent_id and not t["revoked_unix"]}
        if own and (token is None or token["token_id"] not in own):
            raise PermissionDenied(f"agent {agent_id} has its own agent token: it must connect with it")
        digest = sha256_text(secret)
        bound = self.store.identity_secret(agent_id)
        if bound is None:
            self.store.bind_identity(agent_id, digest, now=self.clock())
            log.info("agent %s enrolled", agent_id)
        elif not same(bound, digest):
            raise PermissionDenied(f"agent id {agent_id} is enrolled with another credential; if that device is "
                                   f"gone for good: fleetmeter devices forget {agent_id}")
        if token is not None:
            self.store.use_token(token["token_id"], agent_id, now=self.clock())
        return token

    def _active_token(self, token_sha256: str) -> dict:
        token = self.store.token_by_hash(token_sha256)
        if token is None or token["revoked_unix"]:
            raise Unauthenticated("unknown or revoked agent token: ask an operator for a new one "
                                  "(fleetmeter agents token create) or use the shared agent token")
        return token

    def check_agent_token(self, token_sha256: str) -> dict:
        """The active per-agent token with this hash (its row, without the hash), else Unauthenticated."""
        return _public(self._active_token(token_sha256))

    # ------------------------------------------------------------ credentials (operators)
    def create_agent_token(self, name: str = "", agent_id: AgentId = "") -> dict:
        """Issue a per-agent token: ``{"token": row, "secret": the token}`` (only its hash is kept)."""
        if agent_id and not limits.AGENT_ID_PATTERN.fullmatch(agent_id):
            raise InvalidArgument(f"agent_id must be 1-128 characters of letters, digits and . _ : - starting with "
                                  f"a letter or digit, got {agent_id[:64]!r}")
        if len(name) > 256:
            raise InvalidArgument("name: at most 256 characters")
        token_id, secret = new_agent_token()
        self.store.create_token(token_id, name or token_id, sha256_text(secret), agent_id, now=self.clock())
        log.info("agent token %s (%s) issued%s", token_id, name or token_id, f" for {agent_id}" if agent_id else "")
        return {"token": self.check_agent_token(sha256_text(secret)), "secret": secret}

    def list_agent_tokens(self) -> list[dict]:
        return [_public(t) for t in self.store.list_tokens()]

    def revoke_agent_token(self, token_id: TokenId) -> dict:
        token = self.store.revoke_token(token_id, now=self.clock())
        if token is None:
            raise NotFound(f"unknown agent token {token_id!r} (see: fleetmeter agents token list)")
        log.info("agent token %s revoked", token_id)
        return _public(token)

    def has_agent_tokens(self) -> bool:
        return self.store.has_active_tokens()

    def forget_device(self, agent_id: AgentId) -> dict:
        """Remove an offline device and its enrolment; its leases return to the queue."""
        agent = self.agents.get(agent_id)
        if agent is not None and agent.connected:
            raise FailedPrecondition(f"agent {agent_id} is connected: stop it first, then forget it")
        released = 0
        for job in self.store.leased_jobs():
            if job["agent_id"] == agent_id:
                self.store.release_job(job["job_id"], f"agent {agent_id} forgotten by an operator",
                                       self.config.max_attempts, now=self.clock())
                released += 1
        if not self.store.forget_device(agent_id) and agent is None:
            raise NotFound(f"unknown device {agent_id!r} (see: fleetmeter devices)")
        if agent is not None:
            del self.agents[agent_id]
            self.by_host.get(agent.host_id, {}).pop(agent_id, None)
        self.host_of.pop(agent_id, None)
        log.info("device %s forgotten (%d lease(s) released)", agent_id, released)
        return {"agent_id": agent_id, "released_jobs": released}

    def agent_disconnected(self, agent_id: AgentId) -> None:
        """The stream ended. Its lease stays until it expires: the agent may come back with the result."""
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.connected = False
            self.store.touch_device(agent_id, now=self.clock())

    def heartbeats(self, beats: dict[str, str]) -> list[str]:
        """Many agents' heartbeats at once (``agent_id → the job it reports``), in one store transaction.
        Only the job an agent *reports* is extended: a job the controller believes it handed out but the
        agent does not report expires and is re-queued. Returns the agents this fleet does not know (it
        restarted since their hello): the gateway says hello again for them."""
        now = self.clock()
        extend, unknown = [], []
        for agent_id, job_id in beats.items():
            agent = self.agents.get(agent_id)
            if agent is None:
                unknown.append(agent_id)
                continue
            agent.last_seen_unix = now
            if job_id:
                extend.append((job_id, agent_id))
        self.store.extend_leases(extend, now + self.config.lease_timeout_s, self.config.max_job_s)
        return unknown

    def _held(self, holders: Optional[dict[str, str]] = None) -> dict[str, str]:
        """agent_id → the job it holds. The store's leases are the one record of who holds which job; the
        gateway and this table derive from them. ``holders``: ``store.lease_holders()`` already read."""
        return {a: j for a, j in (self.store.lease_holders() if holders is None else holders).items() if a}

    def current_job(self, agent_id: AgentId) -> Optional[str]:
        return self._held().get(agent_id)

    # ------------------------------------------------------------ scheduling
    def _busy_hosts(self, holders: Optional[dict[str, str]] = None) -> set[str]:
        """Hosts with an open lease. A host-mate that lost its stream (or has not reconnected since a
        controller restart) may still be measuring: its lease keeps the host busy."""
        return {self.host_of.get(agent_id, "") for agent_id in
                (self.store.lease_holders() if holders is None else holders)}

    def schedule_references(self) -> list[str]:
        """Add the drift canary's due reference jobs for the platforms that have a connected agent."""
        served = {pid for a in self.agents.values() if a.connected for pid in a.platform_ids}
        try:
            return self.canary.schedule(served, self.clock())
        except Exception:  # noqa: BLE001 - the canary must never stop the sweeps' dispatch; logged
            log.exception("scheduling reference jobs failed")
            return []

    def set_reference_models(self, models: list[dict]) -> list[dict]:
        """Store the controller-built reference models (rows as ``inspect_model_bytes`` makes them; their
        files are in the blob store already) and hand them to the canary. Returns the stored rows."""
        stored = []
        for m in models:
            self.store.add_model(m, now=self.clock())
            stored.append(self.store.get_model(m["sha256"]))
        self.canary.set_models(stored)
        return stored

    def assign(self, agent_ids: list[str]) -> list[dict]:
        """Lease jobs for many idle agents in one call (the gateway's dispatcher); longest idle first.
        An agent gets nothing when it is busy, its host is busy, there is nothing to do, or it is a
        host-mate's turn; ids the fleet does not know are skipped."""
        holders = self.store.lease_holders()
        busy = self._busy_hosts(holders)
        held = self._held(holders)
        cache: dict = {}
        out = []
        # Agents holding a lease or on a busy host get nothing: left out before sorting (with thousands of busy
        # agents offered every round, walking them was most of a round, docs/benchmarks.md §16).
        candidates = [agent for agent in (self.agents.get(a) for a in agent_ids)
                      if agent is not None and agent.agent_id not in held and agent.host_id not in busy]
        self.schedule_references()
        with self.store.transaction():
            for agent in sorted(candidates, key=lambda a: (a.idle_since_unix, a.agent_id)):
                job = self._next_job(agent, busy, cache, held)
                if job is not None:
                    busy.add(agent.host_id)
                    out.append(job)
        return out

    def _next_job(self, agent: AgentState, busy_hosts: set[str], cache: dict, held: dict) -> Optional[dict]:
        if not agent.connected or agent.agent_id in held or agent.host_id in busy_hosts:
            return None
        now = self.clock()
        if agent.suspended_until_unix > now:
            return None
        mates = [a for a in self.by_host.get(agent.host_id, {}).values()
                 if a.connected and a.suspended_until_unix <= now]
        if any(a.agent_id in held for a in mates):
            return None
        idle_platforms = sorted({pid for a in mates for pid in a.platform_ids})
        # Within one assign call jobs only leave "pending": once nothing is pending for these platforms, the
        # other idle agents that serve them need no query (with 10,000 agents and fewer pending jobs than idle
        # agents, two queries per idle agent per round were most of a round's time).
        exhausted = ("no_pending", tuple(idle_platforms))
        if exhausted in cache:
            return None
        job = self.store.next_pending_job(idle_platforms, agent.agent_id)
        if job is None:
            if self.store.next_pending_job(idle_platforms) is None:
                cache[exhausted] = True
            return None
        if job["platform_id"] not in agent.platform_ids:
            return None  # the best job on this host belongs to a host-mate's platform: its turn
        # Several idle agents of the same pool on one host: the one idle longest goes first.
        rivals = [a for a in mates if job["platform_id"] in a.platform_ids]
        if min(rivals, key=lambda a: (a.idle_since_unix, a.agent_id)).agent_id != agent.agent_id:
            return None
        if not self.store.lease_job(job["job_id"], agent.agent_id, now + self.config.lease_timeout_s, now=now):
            return None
        held[agent.agent_id] = job["job_id"]
        return {**self._assignment(job, cache), "agent_id": agent.agent_id}

    def _assignment(self, job: dict, cache: dict) -> dict:
        def cached(kind, key, load):
            if (kind, key) not in cache:
                cache[(kind, key)] = load(key)
            return cache[(kind, key)]

        sweep = cached("sweep", job["sweep_id"], self.store.get_sweep) or {"spec": {}}
        model = cached("model", job["model_sha256"], self.store.get_model) or {}
        platform = cached("platform", job["platform_id"], self.store.get_platform) or {}
        spec = sweep["spec"]
        return {
            "job_id": job["job_id"], "sweep_id": job["sweep_id"], "platform_id": job["platform_id"],
            "model_sha256": job["model_sha256"], "model_size_bytes": model.get("size_bytes", 0),
            "model_format": model.get("format", ""), "runtime": platform.get("runtime", ""),
            "provider": platform.get("provider", ""), "threads": platform.get("threads", 1),
            "settings": spec.get("settings") or {}, "inputs": spec.get("inputs") or [],
            "cooldown_s": float(spec.get("cooldown_s") or 0.0),
            "max_start_temp_c": float(spec.get("max_start_temp_c") or 0.0),
            "max_thermal_wait_s": float(spec.get("max_thermal_wait_s") or 0.0),
            "profile_operators": bool(spec.get("profile_operators")),
            "reading": spec.get("reading") or {}, "job_kind": quality.job_kind(job, sweep),
        }

    def record_result(self, record: dict, platforms: Optional[dict] = None) -> bool:
        """Store a measurement (idempotent), settle its job and free its agent. ``False`` for a re-send.

        A failed run settles its job unless it should be tried again: a passing kind of
        failure is retried (up to ``max_attempts``); a deterministic one is retried on
        another device of the pool until it failed on the sweep's ``max_device_failures``
        devices, after which the model's remaining jobs on that platform are failed too.
        ``platforms``: platform rows already read (by platform id; filled here), shared by a batch.
        """
        agent_id = record.get("agent_id") or ""
        job_id = record.get("job_id") or ""
        if not job_id:
            raise InvalidArgument("a result must name the job it answers (job_id)")
        limits.validate_measurement(record)
        job = self.store.get_job(job_id)
        if job is None:
            raise InvalidArgument(f"result for unknown job {job_id!r}")
        if not self.store.held_by(job_id, agent_id):
            raise PermissionDenied(f"job {job_id} was never leased to agent {agent_id}")
        # What was measured comes from the lease, never from the message: its sweep, platform, model and kind.
        platforms = {} if platforms is None else platforms  # a batch reads each platform once
        if job["platform_id"] not in platforms:
            platforms[job["platform_id"]] = self.store.get_platform(job["platform_id"]) or {}
        platform = platforms[job["platform_id"]]
        record = {**record, "sweep_id": job["sweep_id"], "platform_id": job["platform_id"],
                  "model_sha256": job["model_sha256"],
                  **{k: platform[k] for k in ("runtime", "runtime_version", "provider", "threads") if k in platform},
                  "job_kind": quality.job_kind(job, self._sweep_fact(job["sweep_id"])["sweep"])}
        agent = self.agents.get(agent_id)
        if agent is not None and job["state"] == "leased" and job["agent_id"] == agent_id:
            agent.idle_since_unix = self.clock()
        kind = record.get("failure_kind") or ""
        self._quality.pop(record["platform_id"], None)
        if job["state"] == "leased" and job["agent_id"] != agent_id:
            # A former holder's late result (its lease expired and the job went to another agent): kept,
            # raw data is never thrown away, but it settles nothing; the lease holder's result will.
            return self.store.record_measurement(record, now=self.clock(), settle=False)
        if not kind or job["state"] not in ("pending", "leased"):
            return self.store.record_measurement(record, now=self.clock())
        sweep = self.store.get_sweep(job["sweep_id"]) or {"spec": {}}
        if kind in DETERMINISTIC_FAILURES:
            limit = max(1, int(sweep["spec"].get("max_device_failures") or 1))
            failed_on = self.store.failing_agents(job["sweep_id"], job["model_sha256"], job["platform_id"],
                                                  DETERMINISTIC_FAILURES) | {record["agent_id"]}
            pool = self.store.devices_on_platform(job["platform_id"])
            retry = len(failed_on) < limit and bool(pool - failed_on)
        else:
            retry = job["attempts"] < self.config.max_attempts
        stored = self.store.record_measurement(record, now=self.clock(), retry=retry,
                                               avoid_agent=kind in DETERMINISTIC_FAILURES)
        if stored and kind in DETERMINISTIC_FAILURES and not retry:
            skipped = self.store.fail_pending(
                job["sweep_id"], job["model_sha256"], job["platform_id"],
                f"skipped: failed on {len(failed_on)} device(s) of this platform: {kind}: "
                f"{record.get('failure_message', '')}", now=self.clock())
            if skipped:
                log.info("model %s cannot run on %s: %d more job(s) marked failed", job["model_sha256"][:12],
                         job["platform_id"], skipped)
        return stored

    def record_results(self, records: list[dict]) -> list[str]:
        """Many results at once (the gateway batches them); see :meth:`record_result`. One outcome per
        record: ``"stored"``, ``"duplicate"`` (stored before), ``"rejected: <why>"`` (refused for good,
        nothing stored: a forged or invalid result) or ``"error"`` (not stored this time; send it again).
        Only the first two may be acknowledged to the agent."""
        platforms: dict = {}

        def one(record: dict) -> str:
            try:
                return "stored" if self.record_result(record, platforms) else "duplicate"
            except (InvalidArgument, PermissionDenied) as exc:  # raised before anything is written
                log.warning("result %s from agent %s refused: %s", record.get("measurement_id"),
                            record.get("agent_id"), exc)
                return f"rejected: {exc}"

        try:
            with self.store.transaction():
                return [one(r) for r in records]
        except Exception:  # noqa: BLE001 - one bad record must not block the batch: go one by one
            log.exception("batch of %d results failed; recording them one by one", len(records))
        out = []
        for r in records:
            try:
                out.append(one(r))
            except Exception:  # noqa: BLE001 - not acknowledged: the agent keeps it and sends it again
                log.exception("result %s could not be stored; it stays in the agent's spool",
                              r.get("measurement_id"))
                out.append("error")
        return out

    def expire_leases(self) -> list[str]:
        """Return jobs whose lease ran out to the queue (or fail them after max_attempts)."""
        now = self.clock()
        released = []
        for job in self.store.leased_jobs():
            if job["lease_expires_unix"] is not None and job["lease_expires_unix"] < now:
                agent = self.agents.get(job["agent_id"] or "")
                held_s = now - (job["started_unix"] or now)
                overran = held_s >= self.config.max_job_s
                reason = (f"held {held_s:.0f} s without a result (more than max_job_s {self.config.max_job_s:g})"
                          if overran else "lease expired: agent went silent")
                state = self.store.release_job(job["job_id"], reason, self.config.max_attempts, now=now)
                if agent is not None:
                    agent.idle_since_unix = now
                    if overran:
                        agent.overruns += 1
                        pause_s = self.config.max_job_s * 2 ** min(agent.overruns - 1, 10)
                        agent.suspended_until_unix = now + pause_s
                        agent.suspended_reason = f"job {job['job_id']} {reason}; no work for {pause_s:.0f} s"
                        log.warning("agent %s suspended: %s", agent.agent_id, agent.suspended_reason)
                log.warning("job %s: lease of agent %s expired → %s", job["job_id"], job["agent_id"], state)
                released.append(job["job_id"])
        return released

    # ------------------------------------------------------------ sweeps
    def submit_sweep(self, spec: dict) -> dict:
        """Validate a sweep spec, expand it into jobs, store both. Raises InvalidArgument/NotFound."""
        limits.validate_sweep_spec(spec)
        models = self._resolve_models(spec.get("models") or [])
        platforms = self._select_platforms(spec.get("platforms") or {}, spec.get("threads") or [])
        repeats = int(spec.get("repeats") or 1)
        if repeats < 1:
            raise InvalidArgument(f"repeats must be >= 1, got {repeats}")
        for key in ("max_device_failures", "cooldown_s", "max_start_temp_c", "max_thermal_wait_s"):
            if float(spec.get(key) or 0) < 0:
                raise InvalidArgument(f"{key} must be >= 0, got {spec[key]}")
        if spec.get("max_start_temp_c") and not spec.get("max_thermal_wait_s"):
            raise InvalidArgument("max_start_temp_c needs max_thermal_wait_s (the gate waits a bounded time)")
        share = quality.repeat_share(spec.get("repeat_sample"))
        quality.validate_reading(spec.get("reading") or {})
        pairs = [(m, p) for m in models for p in platforms if RUNTIME_FOR_FORMAT.get(m["format"]) == p["runtime"]]
        if not pairs:
            formats = sorted({m["format"] for m in models})
            runtimes = sorted({p["runtime"] for p in platforms})
            raise InvalidArgument(f"no selected platform can run the selected models: model formats {formats}, "
                                  f"platform runtimes {runtimes} (onnx needs onnxruntime, tflite needs litert)")
        if len(pairs) * repeats > self.config.max_jobs_per_sweep:
            raise InvalidArgument(f"sweep expands to {len(pairs) * repeats} jobs, more than the controller's limit "
                                  f"of {self.config.max_jobs_per_sweep} (--max-sweep-jobs)")
        sweep_id = "sw-" + uuid.uuid4().hex[:12]
        jobs, seq = [], 0
        for r in range(repeats):
            for m, p in pairs:
                jobs.append({"job_id": f"{sweep_id}-{seq:06d}", "seq": seq, "model_sha256": m["sha256"],
                             "platform_id": p["platform_id"], "repeat_index": r})
                seq += 1
        # Repeat samples: one more round over a sample of the pairs, after every other job (so they run late
        # in the sweep), recognised by repeat_index == repeats. Their pairs feed the platforms' noise ceilings.
        for i in quality.select_repeat_pairs(len(pairs), share, sweep_id):
            m, p = pairs[i]
            jobs.append({"job_id": f"{sweep_id}-{seq:06d}", "seq": seq, "model_sha256": m["sha256"],
                         "platform_id": p["platform_id"], "repeat_index": repeats})
            seq += 1
        stored_spec = {**spec, "models": [m["sha256"] for m in models]}
        sweep = {"sweep_id": sweep_id, "name": spec.get("name") or sweep_id, "spec": stored_spec,
                 "platform_ids": sorted({p["platform_id"] for _, p in pairs}),
                 "priority": int(spec.get("priority") or 0)}
        self.store.create_sweep(sweep, jobs, now=self.clock())
        log.info("sweep %s: %d jobs over %d models × %d platforms × %d repeats (+%d repeat samples)", sweep_id,
                 len(jobs), len(models), len(sweep["platform_ids"]), repeats, len(jobs) - len(pairs) * repeats)
        return self.get_sweep(sweep_id)

    def _resolve_models(self, refs: list[str]) -> list[dict]:
        if not refs:
            raise InvalidArgument("a sweep needs at least one model (sha256, unique sha256 prefix, or name)")
        out, seen = [], set()
        for ref in refs:
            found = self.store.find_models(ref)
            if not found:
                raise NotFound(f"unknown model {ref!r}: upload it first (fleetmeter models add FILE)")
            if len(found) > 1:
                raise InvalidArgument(f"model reference {ref!r} is ambiguous: "
                                      + ", ".join(f"{m['name']} ({m['sha256'][:12]})" for m in found))
            if found[0]["sha256"] not in seen:
                seen.add(found[0]["sha256"])
                out.append(found[0])
        return out

    def _select_platforms(self, selector: dict, threads: list[int]) -> list[dict]:
        platforms = self.store.list_platforms()
        known = {p["platform_id"] for p in platforms}
        ids = list(selector.get("platform_ids") or [])
        for pid in ids:
            if pid not in known:
                raise NotFound(f"unknown platform {pid!r} (see: fleetmeter platforms)")
        labels = dict(selector.get("labels") or {})
        runtimes = set(selector.get("runtimes") or [])
        for rt in runtimes - set(RUNTIME_FOR_FORMAT.values()):
            raise InvalidArgument(f"unknown runtime {rt!r}: expected one of {sorted(RUNTIME_FOR_FORMAT.values())}")
        bad_threads = [t for t in threads if int(t) < 1]
        if bad_threads:
            raise InvalidArgument(f"threads must be >= 1, got {bad_threads}")
        chosen = [p for p in platforms
                  if (not ids or p["platform_id"] in ids)
                  and all(p["labels"].get(k) == v for k, v in labels.items())
                  and (not runtimes or p["runtime"] in runtimes)
                  and (not threads or p["threads"] in {int(t) for t in threads})]
        if not chosen:
            raise InvalidArgument("no platform matches the selector "
                                  f"(platform_ids={ids}, labels={labels}, runtimes={sorted(runtimes)}, "
                                  f"threads={list(threads)}); known platforms: {sorted(known) or 'none yet'}")
        return chosen

    def get_sweep(self, sweep_id: SweepId) -> dict:
        sweep = self.store.get_sweep(sweep_id)
        if sweep is None:
            raise NotFound(f"unknown sweep {sweep_id!r}")
        sweep["progress"] = self.sweep_progress(sweep_id)
        return sweep

    def sweep_progress(self, sweep_id: SweepId) -> dict:
        """Counts by job state, overall and per platform, with an ETA from this sweep's own job times.

        A platform's ETA is its open jobs × its mean job time ÷ the hosts that serve it now
        (agents of one host take turns). The sweep's ETA adds up the platforms per host and
        takes the busiest host. Unknown (no finished job yet, or no agent) is -1.
        """
        sweep = self.store.get_sweep(sweep_id)
        if sweep is None:
            raise NotFound(f"unknown sweep {sweep_id!r}")
        counts = self.store.sweep_counts(sweep_id)
        open_jobs = counts["pending"] + counts["leased"]
        if sweep["state"] == "cancelled":
            state = "cancelled"
        elif not open_jobs:
            state = "done"
        else:
            state = "paused" if sweep["state"] == "paused" else "running"
        per_host_s: dict[str, float] = {}
        unknown = False
        platforms = []
        for pid, c in sorted(self.store.platform_counts(sweep_id).items()):
            hosts = sorted({a.host_id for a in self.agents.values() if a.connected and pid in a.platform_ids})
            remaining = c["pending"] + c["leased"]
            eta = -1.0
            if remaining == 0:
                eta = 0.0
            elif c["mean_job_s"] > 0 and hosts:
                eta = remaining * c["mean_job_s"] / len(hosts)
                for h in hosts:
                    per_host_s[h] = per_host_s.get(h, 0.0) + eta
            else:
                unknown = True
            platforms.append({"platform_id": pid, **{k: c[k] for k in ("pending", "leased", "done", "failed",
                                                                        "cancelled")},
                              "agents_connected": sum(a.connected and pid in a.platform_ids
                                                      for a in self.agents.values()),
                              "mean_job_s": c["mean_job_s"], "eta_s": eta})
        eta_s = 0.0 if not open_jobs else (-1.0 if unknown or not per_host_s else max(per_host_s.values()))
        return {"sweep_id": sweep_id, "total": sum(counts.values()), **counts, "state": state,
                "updated_unix": self.clock(), "eta_s": eta_s, "platforms": platforms}

    def _control(self, sweep_id: SweepId, state: str) -> dict:
        sweep = self.store.get_sweep(sweep_id)
        if sweep is None:
            raise NotFound(f"unknown sweep {sweep_id!r}")
        if sweep["state"] == "cancelled" and state != "cancelled":
            raise InvalidArgument(f"sweep {sweep_id} was cancelled; submit it again instead")
        counts = self.store.sweep_counts(sweep_id)
        if counts["pending"] + counts["leased"] == 0:
            return self.get_sweep(sweep_id)  # finished: nothing left to pause or cancel
        self.store.set_sweep_state(sweep_id, state, now=self.clock())
        log.info("sweep %s → %s", sweep_id, state)
        return self.get_sweep(sweep_id)

    def cancel_sweep(self, sweep_id: SweepId) -> dict:
        return self._control(sweep_id, "cancelled")

    def pause_sweep(self, sweep_id: SweepId) -> dict:
        return self._control(sweep_id, "paused")

    def resume_sweep(self, sweep_id: SweepId) -> dict:
        return self._control(sweep_id, "active")

    # ------------------------------------------------------------ listings
    def list_devices(self) -> list[dict]:
        out = []
        held = self._held()
        now = self.clock()
        for d in self.store.list_devices():
            a = self.agents.get(d["agent_id"])
            connected = bool(a and a.connected)
            d["connected"] = connected
            d["current_job_id"] = held.get(d["agent_id"], "")
            suspended = bool(a and a.suspended_until_unix > now)
            d["suspended_reason"] = a.suspended_reason if suspended else ""
            d["state"] = (("busy" if d["current_job_id"] else "suspended" if suspended else "idle") if connected
                          else "offline")
            if a:
                d["last_seen_unix"] = max(d["last_seen_unix"], a.last_seen_unix)
            out.append(d)
        return out

    def list_platforms(self) -> list[dict]:
        totals = self.store.devices_per_platform()
        out = []
        for p in self.store.list_platforms():
            pid = p["platform_id"]
            p["agents_connected"] = sum(a.connected for a in self.agents.values() if pid in a.platform_ids)
            p["agents_total"] = totals.get(pid, 0)
            p.update(copy.deepcopy(self.platform_quality(pid)))  # callers get their own copy, not the cache
            out.append(p)
        return out

    def platform_quality(self, platform_id: PlatformId) -> dict:
        """``{"noise_ceiling": {within_5, within_10, pairs}, "reference": {...} | None}`` of one platform
        (see ``quality.platform_quality``); cached until a reading of the platform is stored."""
        cached = self._quality.get(platform_id)
        if cached is None:
            def group_of(reading: dict) -> tuple:
                return reading["model_sha256"], self._sweep_fact(reading["sweep_id"])["inputs_key"]

            def model_name(sha256: str) -> str:
                model = self.store.get_model(sha256)
                return model["name"] if model else ""

            cached = quality.platform_quality(self.store.platform_readings(platform_id), group_of, model_name)
            self._quality[platform_id] = cached
        return cached

    def _sweep_fact(self, sweep_id: SweepId) -> dict:
        """What the quality rules need from a sweep's spec, which never changes (so it is parsed once, not per
        result): ``inputs_key``, its inputs' signature, and ``sweep``, enough of it for ``quality.job_kind``
        (``None`` for an unknown sweep)."""
        if sweep_id not in self._sweep_facts:
            sweep = self.store.get_sweep(sweep_id) if sweep_id else None
            spec = (sweep or {}).get("spec") or {}
            self._sweep_facts[sweep_id] = {
                "inputs_key": json.dumps(spec.get("inputs") or [], sort_keys=True),
                "sweep": None if sweep is None else {"spec": {k: spec.get(k) for k in ("kind", "repeats")}},
            }
        return self._sweep_facts[sweep_id]

    def add_model(self, model: dict) -> tuple[dict, bool]:
        new = self.store.add_model(model, now=self.clock())
        return self.store.get_model(model["sha256"]), not new

    def get_model(self, sha256: str) -> dict:
        model = self.store.get_model(sha256)
        if model is None:
            raise NotFound(f"unknown model {sha256!r}")
        return model

    def sweep_inputs(self) -> dict[str, list[dict]]:
        return self.store.sweep_inputs()

    def list_models(self) -> list[dict]:
        return self.store.list_models()

    def import_measurements(self, source: str, rows: list[dict]) -> dict:
        """Store measurements made elsewhere, all or none. Unknown models are errors naming their lines;
        an unknown platform is created as an *imported* platform (no device identity). Re-importing the
        same rows of the same source stores nothing new."""
        import hashlib

        if not rows:
            raise InvalidArgument("nothing to import: no rows")
        limits.validate_import_rows(rows, source=source)
        missing = [r for r in rows if self.store.get_model(r["model_sha256"]) is None]
        if missing:
            raise NotFound("models not uploaded: " + "; ".join(
                f"line {r['line']}: {r['model_sha256'][:12]}" for r in missing[:20]))
        bad = [r for r in rows if not r["platform"] or not (r["latency_ms"] > 0)]
        if bad:
            raise InvalidArgument("bad rows: " + "; ".join(f"line {r['line']}: needs a platform and latency_ms > 0"
                                                           for r in bad[:20]))
        known = {p["platform_id"] for p in self.store.list_platforms()}
        created, imported, present = [], 0, 0
        now = self.clock()
        with self.store.transaction():
            for pid in sorted({r["platform"] for r in rows} - known):
                self.store.upsert_platform({"platform_id": pid, "hardware": "imported (measured elsewhere)",
                                            "hardware_json": {"imported": True}, "runtime": "imported",
                                            "runtime_version": "", "provider": "", "threads": 0, "labels": {}},
                                           now=now)
                created.append(pid)
            for r in rows:
                key = f"{source}|{r['line']}|{r['model_sha256']}|{r['platform']}|{r['latency_ms']!r}"
                record = {
                    "measurement_id": "imp-" + hashlib.sha256(key.encode()).hexdigest()[:32], "job_id": "",
                    "sweep_id": "", "agent_id": source, "platform_id": r["platform"],
                    "model_sha256": r["model_sha256"], "runtime": "imported", "threads": 0,
                    "latency_ms": {"median": float(r["latency_ms"])}, "samples_ms": [],
                    "energy_mj_per_inference": r.get("energy_mj"), "peak_rss_bytes": int(r.get("peak_rss_bytes") or 0),
                    "failure_kind": "", "failure_message": "", "source": source, "source_line": r["line"],
                    "family": r.get("family", ""), "finished_at_unix": now,
                }
                self._quality.pop(r["platform"], None)
                if self.store.record_measurement(record, now=now):
                    imported += 1
                else:
                    present += 1
        log.info("imported %d measurement(s) from %s (%d already present; new platforms: %s)", imported, source,
                 present, created or "none")
        return {"imported": imported, "already_present": present, "created_platforms": created}

    def list_measurements(self, **filters) -> list[dict]:
        if filters.get("sweep_id") and self.store.get_sweep(filters["sweep_id"]) is None:
            raise NotFound(f"unknown sweep {filters['sweep_id']!r}")
        return self.store.list_measurements(**filters)

    # ------------------------------------------------------------ housekeeping: sweep listing, model removal
    def list_sweeps(self, states: Optional[list[str]] = None) -> list[dict]:
        """Sweeps as :meth:`get_sweep` gives them (with ``progress``), newest first; only those whose
        ``progress["state"]`` is in ``states`` when given (InvalidArgument for a state that does not exist)."""
        wanted = set(states or ())
        unknown = sorted(wanted - set(SWEEP_PROGRESS_STATES))
        if unknown:
            raise InvalidArgument(f"unknown sweep state(s) {unknown}: expected some of {list(SWEEP_PROGRESS_STATES)}")
        sweeps = [self.get_sweep(sweep_id) for sweep_id in self.store.list_sweep_ids()]
        return [s for s in sweeps if not wanted or s["progress"]["state"] in wanted]

    def delete_model(self, ref: str, force: bool = False) -> dict:
        """Remove an uploaded model's row and its jobs; its measurements stay. ``ref``: sha256, a unique
        prefix, or a name. Returns ``{"model", "jobs_removed", "measurements_kept"}``; the caller removes
        the file. Refused (FailedPrecondition) for the drift canary's reference models, while jobs of it run,
        and while jobs of it are pending unless ``force`` (which drops them)."""
        found = self.store.find_models(ref) if ref else []
        if not found:
            raise NotFound(f"unknown model {ref!r} (see: fleetmeter models list)")
        if len(found) > 1:
            raise InvalidArgument(f"model reference {ref!r} is ambiguous: "
                                  + ", ".join(f"{m['name']} ({m['sha256'][:12]})" for m in found)
                                  + "; give more of the sha256")
        model = found[0]
        label = f"model {model['name']} ({model['sha256'][:12]})"
        if model["sha256"] in {m["sha256"] for m in self.canary.models.values()}:
            raise FailedPrecondition(f"{label} is the drift canary's reference model; the controller keeps it")
        usage = self.store.model_usage(model["sha256"])
        jobs, sweeps = usage["jobs"], ", ".join(usage["open_sweeps"])
        if jobs["leased"]:
            raise FailedPrecondition(f"{label} is being measured now by {jobs['leased']} running job(s) of sweep(s) "
                                     f"{sweeps}: wait until they finish (fleetmeter sweep status SWEEP_ID), then "
                                     "remove it")
        if jobs["pending"] and not force:
            raise FailedPrecondition(f"{label} is still needed by {jobs['pending']} pending job(s) of sweep(s) "
                                     f"{sweeps}: cancel them (fleetmeter sweep cancel SWEEP_ID) or pass --force "
                                     "to drop its pending jobs")
        removed = self.store.delete_model(model["sha256"], drop_pending=force)
        self._quality.clear()  # readings of this model no longer have a name
        log.info("%s removed (%d job(s) removed, %d measurement(s) kept)", label, removed, usage["measurements"])
        return {"model": model, "jobs_removed": removed, "measurements_kept": usage["measurements"]}


#: The states :meth:`Fleet.sweep_progress` reports (``SweepProgress.state``), which ``list_sweeps`` filters on.
SWEEP_PROGRESS_STATES = ("running", "paused", "cancelled", "done")
