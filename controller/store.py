"""The durable store: SQLite in WAL mode, one file in the controller's data dir.

Contract:
- One owner. A ``Store`` is not thread-safe; the controller's fleet actor is
  its only user, so every write is serialised.
- Every public method commits before it returns (or rolls back and raises):
  a crash never leaves half a sweep or half a result behind.
- A measurement is stored once per ``measurement_id``; sending it twice is a
  no-op that reports ``False``.
- Raw latency samples are kept in the record; summaries are derived columns.
- Queries filter on columns and rows, never on JSON text: JSON columns hold what is handed back out.
- Every write that stamps a time takes ``now`` (unix seconds): the fleet passes its injected clock.

Rows cross the boundary as plain dicts (JSON-able), never as sqlite rows.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from fleetmeter.records import AgentId, JobId, ModelSha256, PlatformId, SweepId, TokenId

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5

# Who ever held each job's lease (a result is accepted only from one of them) and the agents a job failed on
# deterministically (it never goes back to them). Rows, not JSON lists: the scheduler filters on them.
_JOB_AGENT_TABLES = tuple(f"""CREATE TABLE IF NOT EXISTS {table} (
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    agent_id TEXT NOT NULL,
    PRIMARY KEY (job_id, agent_id)
) WITHOUT ROWID""" for table in ("job_holders", "job_failures"))

# Which platforms each device offers, as rows: the scheduler asks "which devices serve platform P".
_DEVICE_PLATFORMS = """CREATE TABLE IF NOT EXISTS device_platforms (
    agent_id TEXT NOT NULL REFERENCES devices(agent_id) ON DELETE CASCADE,
    platform_id TEXT NOT NULL,
    PRIMARY KEY (platform_id, agent_id)
) WITHOUT ROWID"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    agent_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    host_id TEXT NOT NULL,
    info_json TEXT NOT NULL,
    labels_json TEXT NOT NULL,
    platform_ids_json TEXT NOT NULL,
    first_seen_unix REAL NOT NULL,
    last_seen_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS platforms (
    platform_id TEXT PRIMARY KEY,
    hardware TEXT NOT NULL,
    hardware_json TEXT NOT NULL,
    runtime TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    provider TEXT NOT NULL,
    threads INTEGER NOT NULL,
    labels_json TEXT NOT NULL,
    created_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    format TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    info_json TEXT NOT NULL,
    created_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    platform_ids_json TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_unix REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'cancelled')),
    dispatched INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    sweep_id TEXT NOT NULL REFERENCES sweeps(sweep_id),
    seq INTEGER NOT NULL,
    model_sha256 TEXT NOT NULL REFERENCES models(sha256),
    platform_id TEXT NOT NULL REFERENCES platforms(platform_id),
    repeat_index INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    agent_id TEXT,
    lease_expires_unix REAL,
    error TEXT,
    measurement_id TEXT,
    updated_unix REAL NOT NULL,
    started_unix REAL,
    finished_unix REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, platform_id);
CREATE INDEX IF NOT EXISTS jobs_by_sweep ON jobs(sweep_id, state, seq);
CREATE TABLE IF NOT EXISTS measurements (
    measurement_id TEXT PRIMARY KEY,
    job_id TEXT,
    sweep_id TEXT,
    agent_id TEXT NOT NULL,
    platform_id TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    latency_median_ms REAL,
    failure_kind TEXT NOT NULL,
    received_unix REAL NOT NULL,
    record_json TEXT NOT NULL,
    job_kind TEXT NOT NULL DEFAULT '',
    session_spread REAL,
    flags_json TEXT NOT NULL DEFAULT '[]',
    finished_at_unix REAL
);
CREATE INDEX IF NOT EXISTS measurements_by_sweep ON measurements(sweep_id);
CREATE INDEX IF NOT EXISTS measurements_by_job ON measurements(job_id);
CREATE INDEX IF NOT EXISTS measurements_by_platform ON measurements(platform_id, received_unix);
CREATE TABLE IF NOT EXISTS agent_identities (
    agent_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    created_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_tokens (
    token_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    agent_id TEXT NOT NULL DEFAULT '',
    created_unix REAL NOT NULL,
    last_used_unix REAL NOT NULL DEFAULT 0,
    revoked_unix REAL NOT NULL DEFAULT 0
);
""" + "".join(f"{t};\n" for t in (*_JOB_AGENT_TABLES, _DEVICE_PLATFORMS))

# The columns of a job row as the store hands it out. Stores upgraded from version 3 or older still carry the
# retired JSON columns ``failed_agents_json`` and ``holders_json`` (SQLite keeps them); they are never read.
_JOB_COLUMNS = ("job_id, sweep_id, seq, model_sha256, platform_id, repeat_index, state, attempts, agent_id,"
                " lease_expires_unix, error, measurement_id, updated_unix, started_unix, finished_unix")

# Schema upgrades in place: version → the statements that take a store of that version one step up.
# Tables a step does not touch are created afterwards by ``_SCHEMA`` (CREATE ... IF NOT EXISTS).
_MIGRATIONS = {
    2: [  # v3: who ever held each job (a result is accepted only from one of them); identities; agent tokens
        "ALTER TABLE jobs ADD COLUMN holders_json TEXT NOT NULL DEFAULT '[]'",
        "UPDATE jobs SET holders_json = json_array(agent_id) WHERE agent_id IS NOT NULL",
    ],
    3: [  # v4: holders and failed-on agents as rows (job_holders, job_failures) instead of JSON lists in jobs;
          # the old columns stay in the file, unread (dropping a column needs SQLite >= 3.35)
        *_JOB_AGENT_TABLES,
        "INSERT OR IGNORE INTO job_holders(job_id, agent_id) SELECT j.job_id, h.value"
        " FROM jobs j, json_each(j.holders_json) h WHERE h.type = 'text' AND h.value != ''",
        "INSERT OR IGNORE INTO job_failures(job_id, agent_id) SELECT j.job_id, f.value"
        " FROM jobs j, json_each(j.failed_agents_json) f WHERE f.type = 'text' AND f.value != ''",
    ],
    4: [  # v5: a device's platforms as rows (device_platforms); a reading's quality figures as columns
        _DEVICE_PLATFORMS,
        "INSERT OR IGNORE INTO device_platforms(agent_id, platform_id) SELECT d.agent_id, p.value"
        " FROM devices d, json_each(d.platform_ids_json) p WHERE p.type = 'text'",
        "ALTER TABLE measurements ADD COLUMN job_kind TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE measurements ADD COLUMN session_spread REAL",
        "ALTER TABLE measurements ADD COLUMN flags_json TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE measurements ADD COLUMN finished_at_unix REAL",
        "UPDATE measurements SET job_kind = coalesce(json_extract(record_json, '$.job_kind'), ''),"
        " session_spread = json_extract(record_json, '$.session_spread'),"
        " flags_json = coalesce(json_extract(record_json, '$.flags'), '[]'),"
        " finished_at_unix = json_extract(record_json, '$.finished_at_unix')",
    ],
}

JOB_STATES = ("pending", "leased", "done", "failed", "cancelled")
SWEEP_STATES = ("active", "paused", "cancelled")


def _now(now: Optional[float]) -> float:
    """The time a write is stamped with: the caller's ``now``. The fleet always passes its injected clock;
    callers outside it (tools, tests that do not look at times) may leave ``now`` out for the wall clock."""
    return time.time() if now is None else now


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class Store:
    """SQLite store for devices, platforms, models, sweeps, jobs and measurements."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._depth = 0  # nesting of _tx(): only the outermost begins and commits
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if has_meta else None
        if row is not None and int(row["value"]) in _MIGRATIONS:
            self._migrate(int(row["value"]))
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row["value"]) != SCHEMA_VERSION:
            raise RuntimeError(f"store {self.path} has schema version {row['value']}, this fleetmeter "
                               f"expects {SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        """Upgrade an older store step by step, each step in one transaction."""
        while version in _MIGRATIONS:
            with self._tx() as db:
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
                version += 1
                db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
            log.info("store %s upgraded to schema version %d", self.path, version)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._depth:  # inside transaction(): one commit for the whole batch
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
        self._db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group many writes into one commit (all or nothing): the fleet's batched calls use it."""
        with self._tx():
            yield

    # ----------------------------------------------------------------- devices
    def upsert_device(self, agent_id: AgentId, *, name: str, host_id: str, info: dict, labels: dict,
                      platform_ids: list[PlatformId], now: Optional[float] = None) -> None:
        now = _now(now)
        with self._tx() as db:
            db.execute(
                """INSERT INTO devices(agent_id, name, host_id, info_json, labels_json, platform_ids_json,
                                       first_seen_unix, last_seen_unix)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(agent_id) DO UPDATE SET name=excluded.name, host_id=excluded.host_id,
                       info_json=excluded.info_json, labels_json=excluded.labels_json,
                       platform_ids_json=excluded.platform_ids_json, last_seen_unix=excluded.last_seen_unix""",
                (agent_id, name, host_id, _dumps(info), _dumps(labels), _dumps(platform_ids), now, now))
            db.execute("DELETE FROM device_platforms WHERE agent_id=?", (agent_id,))
            db.executemany("INSERT OR IGNORE INTO device_platforms(agent_id, platform_id) VALUES (?, ?)",
                           [(agent_id, pid) for pid in platform_ids])

    def touch_device(self, agent_id: AgentId, now: Optional[float] = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE devices SET last_seen_unix=? WHERE agent_id=?", (_now(now), agent_id))

    def list_devices(self) -> list[dict]:
        rows = self._db.execute("SELECT * FROM devices ORDER BY name, agent_id").fetchall()
        return [{
            "agent_id": r["agent_id"], "name": r["name"], "host_id": r["host_id"],
            "info": json.loads(r["info_json"]), "labels": json.loads(r["labels_json"]),
            "platform_ids": json.loads(r["platform_ids_json"]),
            "first_seen_unix": r["first_seen_unix"], "last_seen_unix": r["last_seen_unix"],
        } for r in rows]

    def devices_on_platform(self, platform_id: PlatformId) -> set[str]:
        """The agent ids of every known device (connected or not) that offers ``platform_id``."""
        rows = self._db.execute("SELECT agent_id FROM device_platforms WHERE platform_id=?", (platform_id,))
        return {r["agent_id"] for r in rows}

    def devices_per_platform(self) -> dict[str, int]:
        """How many known devices offer each platform."""
        rows = self._db.execute("SELECT platform_id, COUNT(*) AS n FROM device_platforms GROUP BY platform_id")
        return {r["platform_id"]: r["n"] for r in rows}

    def forget_device(self, agent_id: AgentId) -> bool:
        """Remove a device's record, its identity binding and what it held or failed (its measurements stay):
        an install that enrols under the id afterwards is a new agent. ``False`` if unknown."""
        with self._tx() as db:
            db.execute("DELETE FROM device_platforms WHERE agent_id=?", (agent_id,))
            cur = db.execute("DELETE FROM devices WHERE agent_id=?", (agent_id,))
            found = cur.rowcount == 1
            cur = db.execute("DELETE FROM agent_identities WHERE agent_id=?", (agent_id,))
            found = found or cur.rowcount == 1
            db.execute("DELETE FROM job_holders WHERE agent_id=?", (agent_id,))
            db.execute("DELETE FROM job_failures WHERE agent_id=?", (agent_id,))
            return found

    # -------------------------------------------------------------- identities
    def identity_secret(self, agent_id: AgentId) -> Optional[str]:
        """The sha256 of the secret ``agent_id`` enrolled with, or ``None`` (not enrolled)."""
        r = self._db.execute("SELECT secret_sha256 FROM agent_identities WHERE agent_id=?", (agent_id,)).fetchone()
        return r["secret_sha256"] if r else None

    def bind_identity(self, agent_id: AgentId, secret_sha256: str, now: Optional[float] = None) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO agent_identities(agent_id, secret_sha256, created_unix) VALUES (?, ?, ?)",
                       (agent_id, secret_sha256, _now(now)))

    def create_token(self, token_id: TokenId, name: str, token_sha256: str, agent_id: AgentId = "",
                     now: Optional[float] = None) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO agent_tokens(token_id, name, token_sha256, agent_id, created_unix)"
                       " VALUES (?, ?, ?, ?, ?)", (token_id, name, token_sha256, agent_id, _now(now)))

    def list_tokens(self) -> list[dict]:
        return [self._token(r) for r in self._db.execute("SELECT * FROM agent_tokens ORDER BY created_unix")]

    def get_token(self, token_id: TokenId) -> Optional[dict]:
        r = self._db.execute("SELECT * FROM agent_tokens WHERE token_id=?", (token_id,)).fetchone()
        return self._token(r) if r else None

    def token_by_hash(self, token_sha256: str) -> Optional[dict]:
        r = self._db.execute("SELECT * FROM agent_tokens WHERE token_sha256=?", (token_sha256,)).fetchone()
        return self._token(r) if r else None

    def has_active_tokens(self) -> bool:
        return self._db.execute("SELECT 1 FROM agent_tokens WHERE revoked_unix=0 LIMIT 1").fetchone() is not None

    def use_token(self, token_id: TokenId, agent_id: AgentId, now: Optional[float] = None) -> None:
        """Bind an unbound token to ``agent_id`` and note its use."""
        with self._tx() as db:
            db.execute("UPDATE agent_tokens SET agent_id=CASE WHEN agent_id='' THEN ? ELSE agent_id END,"
                       " last_used_unix=? WHERE token_id=?", (agent_id, _now(now), token_id))

    def revoke_token(self, token_id: TokenId, now: Optional[float] = None) -> Optional[dict]:
        with self._tx() as db:
            db.execute("UPDATE agent_tokens SET revoked_unix=? WHERE token_id=? AND revoked_unix=0",
                       (_now(now), token_id))
        return self.get_token(token_id)

    @staticmethod
    def _token(r: sqlite3.Row) -> dict:
        return {k: r[k] for k in ("token_id", "name", "agent_id", "created_unix", "last_used_unix",
                                  "revoked_unix", "token_sha256")}

    # --------------------------------------------------------------- platforms
    def upsert_platform(self, platform: dict, now: Optional[float] = None) -> None:
        with self._tx() as db:
            db.execute(
                """INSERT INTO platforms(platform_id, hardware, hardware_json, runtime, runtime_version,
                                         provider, threads, labels_json, created_unix)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(platform_id) DO NOTHING""",
                (platform["platform_id"], platform["hardware"], _dumps(platform["hardware_json"]),
                 platform["runtime"], platform["runtime_version"], platform["provider"],
                 int(platform["threads"]), _dumps(platform["labels"]), _now(now)))

    def list_platforms(self) -> list[dict]:
        rows = self._db.execute("SELECT * FROM platforms ORDER BY platform_id").fetchall()
        return [self._platform(r) for r in rows]

    def get_platform(self, platform_id: PlatformId) -> Optional[dict]:
        r = self._db.execute("SELECT * FROM platforms WHERE platform_id=?", (platform_id,)).fetchone()
        return self._platform(r) if r else None

    @staticmethod
    def _platform(r: sqlite3.Row) -> dict:
        return {"platform_id": r["platform_id"], "hardware": r["hardware"],
                "hardware_json": json.loads(r["hardware_json"]), "runtime": r["runtime"],
                "runtime_version": r["runtime_version"], "provider": r["provider"],
                "threads": r["threads"], "labels": json.loads(r["labels_json"])}

    # ------------------------------------------------------------------ models
    def add_model(self, model: dict, now: Optional[float] = None) -> bool:
        """Insert a model by sha256; ``False`` when it was already there (unchanged)."""
        with self._tx() as db:
            cur = db.execute(
                """INSERT INTO models(sha256, name, format, size_bytes, info_json, created_unix)
                   VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha256) DO NOTHING""",
                (model["sha256"], model["name"], model["format"], int(model["size_bytes"]),
                 _dumps(model.get("info", {})), _now(now)))
            return cur.rowcount == 1

    def get_model(self, sha256: str) -> Optional[dict]:
        r = self._db.execute("SELECT * FROM models WHERE sha256=?", (sha256,)).fetchone()
        return self._model(r) if r else None

    def find_models(self, ref: str) -> list[dict]:
        """Models whose sha256 starts with ``ref`` (at least 6 hex digits) or whose name is ``ref``."""
        rows = self._db.execute("SELECT * FROM models WHERE name=? ORDER BY created_unix", (ref,)).fetchall()
        if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower()):
            rows += self._db.execute("SELECT * FROM models WHERE sha256 LIKE ? ORDER BY created_unix",
                                     (ref.lower() + "%",)).fetchall()
        seen, out = set(), []
        for r in rows:
            if r["sha256"] not in seen:
                seen.add(r["sha256"])
                out.append(self._model(r))
        return out

    def list_models(self) -> list[dict]:
        return [self._model(r) for r in self._db.execute("SELECT * FROM models ORDER BY name, sha256")]

    @staticmethod
    def _model(r: sqlite3.Row) -> dict:
        return {"sha256": r["sha256"], "name": r["name"], "format": r["format"],
                "size_bytes": r["size_bytes"], "info": json.loads(r["info_json"]),
                "created_unix": r["created_unix"]}

    # ------------------------------------------------------------ sweeps/jobs
    def create_sweep(self, sweep: dict, jobs: Iterable[dict], now: Optional[float] = None) -> None:
        """Insert a sweep and all its jobs in one transaction."""
        now = _now(now)
        with self._tx() as db:
            db.execute("INSERT INTO sweeps(sweep_id, name, spec_json, platform_ids_json, priority, created_unix)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       (sweep["sweep_id"], sweep["name"], _dumps(sweep["spec"]), _dumps(sweep["platform_ids"]),
                        int(sweep.get("priority", 0)), now))
            db.executemany(
                "INSERT INTO jobs(job_id, sweep_id, seq, model_sha256, platform_id, repeat_index, state, updated_unix)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                [(j["job_id"], sweep["sweep_id"], j["seq"], j["model_sha256"], j["platform_id"],
                  j["repeat_index"], now) for j in jobs])

    def add_jobs(self, sweep_id: SweepId, jobs: Iterable[dict], now: Optional[float] = None) -> None:
        """Append pending jobs to an existing sweep (the drift canary's per-platform sweeps grow over time)."""
        now = _now(now)
        with self._tx() as db:
            db.executemany(
                "INSERT INTO jobs(job_id, sweep_id, seq, model_sha256, platform_id, repeat_index, state, updated_unix)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                [(j["job_id"], sweep_id, j["seq"], j["model_sha256"], j["platform_id"], j["repeat_index"], now)
                 for j in jobs])

    def next_seq(self, sweep_id: SweepId) -> int:
        """One past the sweep's highest job ``seq`` (0 for a sweep without jobs)."""
        r = self._db.execute("SELECT MAX(seq) FROM jobs WHERE sweep_id=?", (sweep_id,)).fetchone()
        return 0 if r[0] is None else int(r[0]) + 1

    def last_job_update(self, sweep_id: SweepId) -> Optional[float]:
        """The latest ``updated_unix`` of the sweep's jobs (``None`` without jobs)."""
        r = self._db.execute("SELECT MAX(updated_unix) FROM jobs WHERE sweep_id=?", (sweep_id,)).fetchone()
        return r[0]

    def get_sweep(self, sweep_id: SweepId) -> Optional[dict]:
        r = self._db.execute("SELECT * FROM sweeps WHERE sweep_id=?", (sweep_id,)).fetchone()
        if r is None:
            return None
        return {"sweep_id": r["sweep_id"], "name": r["name"], "spec": json.loads(r["spec_json"]),
                "platform_ids": json.loads(r["platform_ids_json"]), "priority": r["priority"],
                "created_unix": r["created_unix"], "state": r["state"], "dispatched": r["dispatched"]}

    def sweep_inputs(self) -> dict[str, list[dict]]:
        """Each sweep's input overrides (its spec's ``inputs``: ``[{name, shape, fill}]``) by sweep id; sweeps
        without any are left out. What training needs to featurize a measurement at the shapes it ran at."""
        rows = self._db.execute("SELECT sweep_id, json_extract(spec_json, '$.inputs') AS inputs FROM sweeps")
        return {r["sweep_id"]: json.loads(r["inputs"]) for r in rows if r["inputs"] and r["inputs"] != "[]"}

    def set_sweep_state(self, sweep_id: SweepId, state: str, now: Optional[float] = None) -> None:
        """active ↔ paused, or → cancelled (pending jobs become cancelled; running ones finish)."""
        if state not in SWEEP_STATES:
            raise ValueError(f"unknown sweep state {state!r}")
        with self._tx() as db:
            db.execute("UPDATE sweeps SET state=? WHERE sweep_id=?", (state, sweep_id))
            if state == "cancelled":
                db.execute("UPDATE jobs SET state='cancelled', error='sweep cancelled', updated_unix=?"
                           " WHERE sweep_id=? AND state='pending'", (_now(now), sweep_id))

    def platform_counts(self, sweep_id: SweepId) -> dict[str, dict]:
        """Per platform: job counts by state and the mean wall time of finished jobs (``mean_job_s``)."""
        out: dict[str, dict] = {}
        for r in self._db.execute(
                "SELECT platform_id, state, COUNT(*) AS n, AVG(CASE WHEN finished_unix IS NOT NULL AND started_unix"
                " IS NOT NULL AND state IN ('done', 'failed') THEN finished_unix - started_unix END) AS mean_s"
                " FROM jobs WHERE sweep_id=? GROUP BY platform_id, state", (sweep_id,)):
            entry = out.setdefault(r["platform_id"], {**dict.fromkeys(JOB_STATES, 0), "mean_job_s": 0.0})
            entry[r["state"]] = r["n"]
            if r["mean_s"] is not None and r["state"] == "done":
                entry["mean_job_s"] = r["mean_s"]
        return out

    def sweep_counts(self, sweep_id: SweepId) -> dict[str, int]:
        counts = dict.fromkeys(JOB_STATES, 0)
        for r in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs WHERE sweep_id=? GROUP BY state",
                                  (sweep_id,)):
            counts[r["state"]] = r["n"]
        return counts

    def get_job(self, job_id: JobId) -> Optional[dict]:
        r = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return dict(r) if r else None

    def held_by(self, job_id: JobId, agent_id: AgentId) -> bool:
        """Whether ``agent_id`` ever held the lease of ``job_id`` (only such an agent may send its result)."""
        return self._db.execute("SELECT 1 FROM job_holders WHERE job_id=? AND agent_id=?",
                                (job_id, agent_id)).fetchone() is not None

    def next_pending_job(self, platform_ids: Iterable[PlatformId], agent_id: AgentId = "") -> Optional[dict]:
        """The job to run next among ``platform_ids`` of active sweeps.

        Highest sweep priority first; among sweeps of equal priority, the one that
        has dispatched the fewest jobs so far (fair sharing: concurrent sweeps
        advance together), then the oldest; within a sweep, job order. Jobs that
        already failed on ``agent_id`` are left for other devices of the pool.
        """
        ids = list(platform_ids)
        if not ids:
            return None
        marks = ",".join("?" * len(ids))
        # Two small indexed steps instead of one sort over every pending job: pick the sweep, then its
        # first matching job in order (jobs_by_sweep walks (sweep_id, 'pending', seq) and stops early).
        match = f"j.state='pending' AND j.platform_id IN ({marks})"
        args = [*ids]
        if agent_id:
            match += " AND NOT EXISTS (SELECT 1 FROM job_failures f WHERE f.job_id = j.job_id AND f.agent_id = ?)"
            args.append(agent_id)
        sweep = self._db.execute(
            f"""SELECT s.sweep_id FROM sweeps s WHERE s.state='active'
                  AND EXISTS (SELECT 1 FROM jobs j WHERE j.sweep_id = s.sweep_id AND {match})
                ORDER BY s.priority DESC, s.dispatched, s.created_unix, s.sweep_id LIMIT 1""", args).fetchone()
        if sweep is None:
            return None
        r = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs j WHERE j.sweep_id=? AND {match}"
                             " ORDER BY j.seq LIMIT 1",
                             [sweep["sweep_id"], *args]).fetchone()
        return dict(r) if r else None

    def lease_job(self, job_id: JobId, agent_id: AgentId, expires_unix: float, now: Optional[float] = None,
                  new_attempt: bool = True) -> bool:
        """pending → leased, and the agent noted among the job's holders (:meth:`held_by`); ``False`` if the
        job was no longer pending. ``new_attempt=False`` re-leases a job to the agent that already ran it (its
        result is on the way): no attempt is counted."""
        with self._tx() as db:
            now = _now(now)
            if not new_attempt:
                cur = db.execute("UPDATE jobs SET state='leased', agent_id=?, lease_expires_unix=?, updated_unix=?"
                                 " WHERE job_id=? AND state='pending'", (agent_id, expires_unix, now, job_id))
            else:
                cur = db.execute("UPDATE jobs SET state='leased', agent_id=?, lease_expires_unix=?,"
                                 " attempts=attempts+1, updated_unix=?, started_unix=?"
                                 " WHERE job_id=? AND state='pending'",
                                 (agent_id, expires_unix, now, now, job_id))
            if cur.rowcount != 1:
                return False
            db.execute("INSERT OR IGNORE INTO job_holders(job_id, agent_id) VALUES (?, ?)", (job_id, agent_id))
            if new_attempt:
                db.execute("UPDATE sweeps SET dispatched=dispatched+1 WHERE sweep_id="
                           "(SELECT sweep_id FROM jobs WHERE job_id=?)", (job_id,))
            return True

    def extend_lease(self, job_id: JobId, agent_id: AgentId, expires_unix: float,
                     max_hold_s: Optional[float] = None) -> bool:
        return self.extend_leases([(job_id, agent_id)], expires_unix, max_hold_s) == 1

    def extend_leases(self, leases: Iterable[tuple[str, str]], expires_unix: float,
                      max_hold_s: Optional[float] = None) -> int:
        """``(job_id, agent_id)`` pairs: extend each lease still held by that agent, in one transaction, never
        past ``started_unix + max_hold_s``. Returns how many leases were extended."""
        leases = list(leases)
        if not leases:
            return 0
        cap = 1e18 if max_hold_s is None else float(max_hold_s)
        with self._tx() as db:
            cur = db.executemany(
                "UPDATE jobs SET lease_expires_unix=MIN(?, COALESCE(started_unix, ?) + ?)"
                " WHERE job_id=? AND agent_id=? AND state='leased'",
                [(expires_unix, expires_unix, cap, job, agent) for job, agent in leases])
            return cur.rowcount

    def leased_jobs(self) -> list[dict]:
        return [dict(r) for r in self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state='leased'")]

    def lease_holders(self) -> dict[str, str]:
        """``agent_id → job_id`` of every open lease: what the scheduler asks on every dispatch round, two
        columns off the ``jobs_by_state`` index instead of :meth:`leased_jobs`'s whole rows (which were 60 % of
        the fleet actor's time with 4,000 agents holding leases, docs/benchmarks.md §16)."""
        return {r[0]: r[1] for r in self._db.execute(
            "SELECT agent_id, job_id FROM jobs WHERE state='leased' AND agent_id IS NOT NULL")}

    def release_job(self, job_id: JobId, reason: str, max_attempts: int, now: Optional[float] = None) -> str:
        """leased → pending again, or → failed once ``max_attempts`` leases were spent. Returns the new state."""
        with self._tx() as db:
            r = db.execute("SELECT attempts, state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if r is None or r["state"] != "leased":
                return r["state"] if r else "missing"
            state = "failed" if r["attempts"] >= max_attempts else "pending"
            error = f"{reason} (after {r['attempts']} attempts)" if state == "failed" else reason
            db.execute("UPDATE jobs SET state=?, agent_id=NULL, lease_expires_unix=NULL, error=?, updated_unix=?"
                       " WHERE job_id=?", (state, error, _now(now), job_id))
            return state

    # ------------------------------------------------------------ measurements
    def record_measurement(self, record: dict, now: Optional[float] = None, retry: bool = False,
                           avoid_agent: bool = False, settle: bool = True) -> bool:
        """Store one measurement and settle its job, atomically.

        ``record`` is the measurement as a JSON-able dict (with ``measurement_id``,
        ``job_id``, ``agent_id``, ``platform_id``, ``model_sha256``, ``latency_ms``,
        ``samples_ms``, ``failure_kind`` ...). Returns ``False`` when this
        ``measurement_id`` was stored before (a re-send), in which case nothing changes.
        A job already settled by another measurement keeps its first result; the
        late record is still kept (raw data is never thrown away) without a job link.
        With ``retry`` a failed run does not settle its job: the job returns to the
        queue (with ``avoid_agent``, never again to the agent it failed on). With
        ``settle=False`` the record is kept without touching (or linking to) its job.
        """
        now = _now(now)
        job_id = record.get("job_id") or None
        with self._tx() as db:
            if db.execute("SELECT 1 FROM measurements WHERE measurement_id=?",
                          (record["measurement_id"],)).fetchone():
                return False
            job = self.get_job(job_id) if job_id else None
            settles = settle and job is not None and job["state"] in ("pending", "leased")
            sweep_id = job["sweep_id"] if job is not None else record.get("sweep_id") or None
            latency = record.get("latency_ms") or {}
            db.execute(
                """INSERT INTO measurements(measurement_id, job_id, sweep_id, agent_id, platform_id, model_sha256,
                                            latency_median_ms, failure_kind, received_unix, record_json, job_kind,
                                            session_spread, flags_json, finished_at_unix)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (record["measurement_id"], job_id if settles or job is None else None, sweep_id,
                 record["agent_id"], record["platform_id"], record["model_sha256"], latency.get("median"),
                 record.get("failure_kind") or "", now, _dumps({**record, "sweep_id": sweep_id or ""}),
                 record.get("job_kind") or "", record.get("session_spread"), _dumps(record.get("flags") or []),
                 record.get("finished_at_unix")))
            failed = bool(record.get("failure_kind"))
            error = f"{record['failure_kind']}: {record.get('failure_message', '')}" if failed else None
            if settles and retry and failed:
                db.execute("UPDATE jobs SET state='pending', agent_id=NULL, lease_expires_unix=NULL, error=?,"
                           " updated_unix=? WHERE job_id=?", (error, now, job_id))
                if avoid_agent:
                    db.execute("INSERT OR IGNORE INTO job_failures(job_id, agent_id) VALUES (?, ?)",
                               (job_id, record["agent_id"]))
            elif settles:
                db.execute("UPDATE jobs SET state=?, measurement_id=?, agent_id=?, lease_expires_unix=NULL,"
                           " error=?, updated_unix=?, finished_unix=? WHERE job_id=?",
                           ("failed" if failed else "done", record["measurement_id"], record["agent_id"],
                            error, now, now, job_id))
            elif job is not None:
                log.info("job %s was already %s; measurement %s kept unlinked", job_id, job["state"],
                         record["measurement_id"])
            return True

    def failing_agents(self, sweep_id: SweepId, model_sha256: ModelSha256, platform_id: PlatformId, kinds: Iterable[str]) -> set[str]:
        """Distinct agents on which this model failed with one of ``kinds`` in this sweep on this platform."""
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        rows = self._db.execute(
            f"SELECT DISTINCT agent_id FROM measurements WHERE sweep_id=? AND model_sha256=? AND platform_id=?"
            f" AND failure_kind IN ({marks})", [sweep_id, model_sha256, platform_id, *kinds])
        return {r["agent_id"] for r in rows}

    def fail_pending(self, sweep_id: SweepId, model_sha256: ModelSha256, platform_id: PlatformId, reason: str,
                     now: Optional[float] = None) -> int:
        """Mark this model's still-pending jobs on this platform failed (it cannot run there)."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state='failed', error=?, updated_unix=? WHERE sweep_id=? AND"
                             " model_sha256=? AND platform_id=? AND state='pending'",
                             (reason, _now(now), sweep_id, model_sha256, platform_id))
            return cur.rowcount

    def list_measurements(self, *, sweep_id: SweepId = "", platform_id: PlatformId = "", model_sha256: ModelSha256 = "",
                          include_samples: bool = True) -> list[dict]:
        where, args = [], []
        for column, value in (("sweep_id", sweep_id), ("platform_id", platform_id),
                              ("model_sha256", model_sha256)):
            if value:
                where.append(f"{column}=?")
                args.append(value)
        sql = "SELECT record_json FROM measurements"
        if where:
            sql += " WHERE " + " AND ".join(where)
        out = []
        for r in self._db.execute(sql + " ORDER BY received_unix, measurement_id", args):
            record = json.loads(r["record_json"])
            if not include_samples:
                record["samples_ms"] = []
            out.append(record)
        return out

    def platform_readings(self, platform_id: PlatformId) -> list[dict]:
        """The platform's successful readings in the order they arrived, without samples: ``measurement_id``,
        ``sweep_id``, ``model_sha256``, ``median_ms``, ``job_kind``, ``session_spread``, ``flags`` (a list),
        ``finished_at_unix``. Cheap: the figures are columns, no record is parsed here."""
        rows = self._db.execute(
            "SELECT measurement_id, sweep_id, model_sha256, latency_median_ms, job_kind, session_spread, flags_json,"
            " finished_at_unix, received_unix FROM measurements"
            " WHERE platform_id=? AND failure_kind='' AND latency_median_ms > 0"
            " ORDER BY received_unix, measurement_id", (platform_id,))
        return [{"measurement_id": r["measurement_id"], "sweep_id": r["sweep_id"] or "",
                 "model_sha256": r["model_sha256"], "median_ms": r["latency_median_ms"],
                 "job_kind": r["job_kind"], "session_spread": r["session_spread"],
                 "flags": json.loads(r["flags_json"]),
                 "finished_at_unix": r["finished_at_unix"] or r["received_unix"]} for r in rows]

    def count_measurements(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]

    # ------------------------------------------------------------ housekeeping: sweep listing, model removal
    def list_sweep_ids(self) -> list[str]:
        """Every sweep's id, newest first."""
        return [r["sweep_id"] for r in self._db.execute("SELECT sweep_id FROM sweeps ORDER BY created_unix DESC,"
                                                        " rowid DESC")]

    def model_usage(self, sha256: str) -> dict:
        """What still refers to a model: ``jobs`` (its jobs' count by state), ``open_sweeps`` (the sweeps with
        a pending or leased job of it, sorted) and ``measurements`` (how many are stored)."""
        jobs = dict.fromkeys(JOB_STATES, 0)
        for r in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs WHERE model_sha256=? GROUP BY state",
                                  (sha256,)):
            jobs[r["state"]] = r["n"]
        open_sweeps = [r["sweep_id"] for r in self._db.execute(
            "SELECT DISTINCT sweep_id FROM jobs WHERE model_sha256=? AND state IN ('pending', 'leased')"
            " ORDER BY sweep_id", (sha256,))]
        measurements = self._db.execute("SELECT COUNT(*) FROM measurements WHERE model_sha256=?",
                                        (sha256,)).fetchone()[0]
        return {"jobs": jobs, "open_sweeps": open_sweeps, "measurements": measurements}

    def delete_model(self, sha256: str, drop_pending: bool = False) -> int:
        """Remove a model's row and its jobs (the rows that point at it), atomically; measurements stay.

        Its done, failed and cancelled jobs go, and with ``drop_pending`` its pending ones; a leased job (or,
        without ``drop_pending``, a pending one) makes the model row's foreign key fail, and nothing changes
        (``sqlite3.IntegrityError``). Returns how many jobs were removed; ``-1`` when there was no such model.
        """
        states = ("done", "failed", "cancelled") + (("pending",) if drop_pending else ())
        marks = ",".join("?" * len(states))
        with self._tx() as db:
            if db.execute("SELECT 1 FROM models WHERE sha256=?", (sha256,)).fetchone() is None:
                return -1
            doomed = f"SELECT job_id FROM jobs WHERE model_sha256=? AND state IN ({marks})"
            for table in ("job_holders", "job_failures"):
                db.execute(f"DELETE FROM {table} WHERE job_id IN ({doomed})", (sha256, *states))
            removed = db.execute(f"DELETE FROM jobs WHERE model_sha256=? AND state IN ({marks})",
                                 (sha256, *states)).rowcount
            db.execute("DELETE FROM models WHERE sha256=?", (sha256,))
            return removed
