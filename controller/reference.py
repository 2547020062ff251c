"""The drift canary: one small reference model per format, measured on every platform over time.

The controller builds the reference models itself at start (a small CNN from
the zoo, emitted as ONNX for onnxruntime platforms and as TFLite for LiteRT
platforms; same generator, same bytes, so the sha256 stays the same across
restarts), stores them like uploaded models and hands them to the fleet.

Scheduling rule (:class:`ReferenceCanary`): a platform that has a connected
agent gets a reference job when its last one was scheduled at least
``interval_s`` ago (or never), and only while none of its reference jobs is
still open. So the canary measures when an agent serving the platform
connects (at most once per interval, however often the agent reconnects) and
then every ``interval_s`` while the platform stays served. ``interval_s`` 0
turns the canary off.

Reference jobs live in one internal sweep per platform, id
:func:`reference_sweep_id`, named ``reference:<platform_id>``, with the
highest priority (they go before every sweep's jobs) and ``spec["kind"] ==
"reference"`` (their readings get ``job_kind == "reference"``). Pausing that
sweep pauses the platform's canary; cancelling it only drops the open job.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Iterable, Optional

from .platforms import RUNTIME_FOR_FORMAT
from .quality import REFERENCE_KIND
from .store import Store

log = logging.getLogger(__name__)

#: Above any priority a user would give a sweep (SweepSpec.priority is an int32).
REFERENCE_PRIORITY = 1_000_000_000
#: Fixed knobs, so that the readings of one platform stay comparable over time.
REFERENCE_SETTINGS = {"warmup_runs": 5, "min_runs": 20, "min_duration_ms": 300.0, "max_duration_ms": 10_000.0}
REFERENCE_SEED = 0
FORMAT_FOR_RUNTIME = {runtime: fmt for fmt, runtime in RUNTIME_FOR_FORMAT.items()}


def reference_sweep_id(platform_id: str) -> str:
    return "ref-" + hashlib.sha256(platform_id.encode()).hexdigest()[:12]


def reference_model_name(fmt: str) -> str:
    return f"reference-{fmt}"


def build_reference_model(fmt: str) -> tuple[bytes, str]:
    """The reference model's bytes in ``fmt`` ("onnx" | "tflite") and its name. Deterministic."""
    from fleetmeter.modeler.zoo.tiny import convnet

    arch = convnet("fleetmeter_reference", input_size=48)
    if fmt == "onnx":
        from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes

        return onnx_bytes(build_onnx(arch, seed=REFERENCE_SEED)), reference_model_name(fmt)
    if fmt == "tflite":
        from fleetmeter.modeler.zoo.tflite_emit import build_tflite

        return build_tflite(arch, seed=REFERENCE_SEED), reference_model_name(fmt)
    raise ValueError(f"no reference model for format {fmt!r}")


def build_and_inspect(fmt: str) -> dict:
    """``{"format", "model", "data"}`` (``model`` is the store's row), or ``{"format",
    "error"}`` when this format cannot be built here (a missing optional package, say)."""
    try:
        from .inspect_model import inspect_model_bytes

        data, name = build_reference_model(fmt)
        return {"format": fmt, "model": inspect_model_bytes((data, name)), "data": data}
    except Exception as exc:  # noqa: BLE001 - reported back; the canary then skips this format
        return {"format": fmt, "error": f"{type(exc).__name__}: {exc}"}


def reference_spec(platform_id: str, model_sha256: str) -> dict:
    return {"name": f"reference:{platform_id}", "kind": REFERENCE_KIND, "models": [model_sha256],
            "platforms": {"platform_ids": [platform_id], "labels": {}, "runtimes": []}, "threads": [],
            "repeats": 1, "settings": dict(REFERENCE_SETTINGS), "reading": {}, "priority": REFERENCE_PRIORITY,
            "inputs": [], "repeat_sample": -1.0}


class ReferenceCanary:
    """Decides when each platform's reference job is due and adds it to the store (see the module doc).

    Not thread-safe; the fleet calls it. ``schedule`` is cheap when nothing is due (a dict look-up per
    served platform), so the fleet may call it on every dispatch round."""

    def __init__(self, store: Store, interval_s: float) -> None:
        self.store = store
        self.interval_s = float(interval_s)
        self.models: dict[str, dict] = {}        # format → model row
        self._last: dict[str, float] = {}        # platform_id → when its last reference job was scheduled
        self._runtime: dict[str, str] = {}       # platform_id → runtime (platform rows do not change)

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0 and bool(self.models)

    def set_models(self, models: Iterable[dict]) -> None:
        for m in models:
            self.models[m["format"]] = m

    def _last_scheduled(self, platform_id: str) -> float:
        if platform_id not in self._last:  # after a (re)start: the record in the store counts
            last = self.store.last_job_update(reference_sweep_id(platform_id))
            self._last[platform_id] = float("-inf") if last is None else last
        return self._last[platform_id]

    def schedule(self, platform_ids: Iterable[str], now: float) -> list[str]:
        """Add a reference job for each of ``platform_ids`` (platforms with a connected agent) that is due.
        Returns the new jobs' ids."""
        if not self.enabled:
            return []
        added = []
        for pid in sorted(set(platform_ids)):
            if now - self._last_scheduled(pid) < self.interval_s:
                continue
            job_id = self._add_job(pid, now)
            if job_id:
                added.append(job_id)
        return added

    def _add_job(self, platform_id: str, now: float) -> Optional[str]:
        if platform_id not in self._runtime:
            platform = self.store.get_platform(platform_id)
            self._runtime[platform_id] = platform["runtime"] if platform else ""
        model = self.models.get(FORMAT_FOR_RUNTIME.get(self._runtime[platform_id], ""))
        if model is None:  # an imported platform, or a runtime whose reference model could not be built
            self._last[platform_id] = float("inf")
            return None
        sweep_id = reference_sweep_id(platform_id)
        sweep = self.store.get_sweep(sweep_id)
        if sweep is not None:
            if sweep["state"] == "paused":
                return None
            counts = self.store.sweep_counts(sweep_id)
            if counts["pending"] + counts["leased"]:
                return None  # the last one has not run yet (the agent is busy): no pile-up
        seq = self.store.next_seq(sweep_id) if sweep is not None else 0
        job = {"job_id": f"{sweep_id}-{seq:06d}", "seq": seq, "model_sha256": model["sha256"],
               "platform_id": platform_id, "repeat_index": seq}
        with self.store.transaction():
            if sweep is None:
                self.store.create_sweep({"sweep_id": sweep_id, "name": f"reference:{platform_id}",
                                         "spec": reference_spec(platform_id, model["sha256"]),
                                         "platform_ids": [platform_id], "priority": REFERENCE_PRIORITY},
                                        [job], now=now)
            else:
                if sweep["state"] == "cancelled":
                    self.store.set_sweep_state(sweep_id, "active", now=now)
                self.store.add_jobs(sweep_id, [job], now=now)
        self._last[platform_id] = now
        log.info("reference job %s (%s) for platform %s", job["job_id"], model["name"], platform_id)
        return job["job_id"]
