"""Proto messages ↔ the plain dicts the fleet and the store work with.

Explicit field lists instead of ``MessageToDict`` so that types stay what the
store expects (int64 stays int, absent optional energy stays None).
"""
from __future__ import annotations

import json
from typing import Any

from fleetmeter import fields
from fleetmeter.v1 import agent_pb2, common_pb2, fleet_pb2

from .limits import MAX_HARDWARE_JSON_BYTES, MAX_PROBE_JSON_BYTES, json_object

_SETTINGS_FIELDS = fields.SETTINGS_FIELDS
_SUMMARY_FIELDS = ("median", "mean", "p90", "p99", "std", "min", "max", "n", "cv")
_SPEC_EXTRAS = fields.SPEC_EXTRAS
READING_FIELDS = fields.READING_FIELDS
_INTERFERENCE_OPTIONAL = tuple(f.name for f in common_pb2.Interference.DESCRIPTOR.fields
                               if f.has_presence and f.message_type is None and f.name != "window_s"
                               and f.type == f.TYPE_DOUBLE)
_SESSION_SCALARS = ("index", "median_ms", "n", "load_ms", "started_at_unix", "finished_at_unix", "accepted",
                    "stop_reason", "failure_kind")
_DEVICE_SCALARS = ("hostname", "host_id", "os", "arch", "cpu_model", "cpu_cores", "cpu_max_freq_mhz",
                   "memory_total_bytes", "device_model")


def settings_to_dict(s: common_pb2.BenchSettings) -> dict:
    return {f: getattr(s, f) for f in _SETTINGS_FIELDS if s.HasField(f)}


def settings_from_dict(d: dict) -> common_pb2.BenchSettings:
    return common_pb2.BenchSettings(**{f: d[f] for f in _SETTINGS_FIELDS if d.get(f) is not None})


def reading_to_dict(r: common_pb2.ReadingSettings) -> dict:
    """Only the fields that are set: an absent one means "the agent's default"."""
    return {f: getattr(r, f) for f in READING_FIELDS if r.HasField(f)}


def reading_from_dict(d: dict) -> common_pb2.ReadingSettings:
    return common_pb2.ReadingSettings(**{f: d[f] for f in READING_FIELDS if d.get(f) is not None})


def interference_to_dict(i: common_pb2.Interference) -> dict:
    """The guard's figures; an optional figure the device could not read is ``None``."""
    d: dict[str, Any] = {"window_s": i.window_s, "speed_wait_s": i.speed_wait_s}
    d.update({f: getattr(i, f) if i.HasField(f) else None for f in _INTERFERENCE_OPTIONAL})
    d["disturbed"] = i.disturbed
    d["reasons"] = list(i.reasons)
    return d


def interference_from_dict(d: dict) -> common_pb2.Interference:
    return common_pb2.Interference(
        window_s=d.get("window_s") or 0.0, speed_wait_s=d.get("speed_wait_s") or 0.0,
        disturbed=bool(d.get("disturbed")), reasons=d.get("reasons") or [],
        **{f: d[f] for f in _INTERFERENCE_OPTIONAL if d.get(f) is not None})


def session_to_dict(s: common_pb2.SessionSummary) -> dict:
    d: dict[str, Any] = {f: getattr(s, f) for f in _SESSION_SCALARS}
    d["interference"] = interference_to_dict(s.interference) if s.HasField("interference") else None
    return d


def session_from_dict(d: dict) -> common_pb2.SessionSummary:
    s = common_pb2.SessionSummary(**{f: d[f] for f in _SESSION_SCALARS if d.get(f) is not None})
    if d.get("interference") is not None:
        s.interference.CopyFrom(interference_from_dict(d["interference"]))
    return s


def inputs_to_list(inputs) -> list[dict]:
    out = []
    for i in inputs:
        item: dict[str, Any] = {"name": i.name, "shape": [int(x) for x in i.shape]}
        if i.HasField("fill"):
            item["fill"] = i.fill
        out.append(item)
    return out


def inputs_from_list(items: list[dict]) -> list[common_pb2.InputOverride]:
    return [common_pb2.InputOverride(name=i["name"], shape=i.get("shape") or [],
                                     **({"fill": i["fill"]} if i.get("fill") is not None else {})) for i in items]


def hello_to_dict(h: agent_pb2.Hello) -> dict:
    device = {f: getattr(h.device, f) for f in _DEVICE_SCALARS}
    device["gpus"] = list(h.device.gpus)
    device["runtimes"] = [{"name": r.name, "version": r.version, "providers": list(r.providers)}
                          for r in h.device.runtimes]
    device["power_sensors"] = list(h.device.power_sensors)
    device["thermal_zones"] = list(h.device.thermal_zones)
    # Parsed here, at the edge: malformed, non-object or oversized JSON is the agent's bad input
    # (INVALID_ARGUMENT naming the field), not a JSONDecodeError deeper in.
    device["hardware"] = json_object(h.device.hardware_json, "device.hardware_json",
                                     MAX_HARDWARE_JSON_BYTES) if h.device.hardware_json else {
        "arch": h.device.arch, "cpu_model": h.device.cpu_model, "cores": h.device.cpu_cores}
    device["probe"] = (json_object(h.device.probe_json, "device.probe_json", MAX_PROBE_JSON_BYTES)
                       if h.device.probe_json else {})
    return {
        "agent_id": h.agent_id, "name": h.name, "device": device, "labels": dict(h.labels),
        "offers": [{"runtime": o.runtime, "runtime_version": o.runtime_version, "provider": o.provider,
                    "threads": o.threads} for o in h.offers],
        "agent_version": h.agent_version, "current_job_id": h.current_job_id,
        "spooled_job_ids": list(h.spooled_job_ids), "agent_secret": h.agent_secret,
    }


def measurement_to_dict(m: common_pb2.Measurement) -> dict:
    d: dict[str, Any] = {f: getattr(m, f) for f in (
        "measurement_id", "job_id", "agent_id", "platform_id", "model_sha256", "runtime", "runtime_version",
        "provider", "threads", "load_ms", "first_run_ms", "peak_rss_bytes", "power_sensor", "failure_kind",
        "failure_message", "started_at_unix", "finished_at_unix", "sweep_id", "warmup_runs", "cooldown_wait_s",
        "thermal_wait_s", "thermal_gate_timed_out", "session_spread", "job_kind")}
    d["latency_ms"] = ({f: getattr(m.latency_ms, f) for f in _SUMMARY_FIELDS}
                       if m.HasField("latency_ms") else None)
    d["samples_ms"] = list(m.samples_ms)
    d["energy_mj_per_inference"] = m.energy_mj_per_inference if m.HasField("energy_mj_per_inference") else None
    d["avg_power_w"] = m.avg_power_w if m.HasField("avg_power_w") else None
    d["temps_c_before"] = dict(m.temps_c_before)
    d["temps_c_after"] = dict(m.temps_c_after)
    d["operators"] = [{"node_name": o.node_name, "op_type": o.op_type, "provider": o.provider,
                       "input_shapes": list(o.input_shapes), "output_shapes": list(o.output_shapes),
                       "median_us": o.median_us, "mean_us": o.mean_us, "runs": o.runs} for o in m.operators]
    d["sessions"] = [session_to_dict(x) for x in m.sessions]
    d["interference"] = interference_to_dict(m.interference) if m.HasField("interference") else None
    d["flags"] = list(m.flags)
    return d


_MEASUREMENT_NESTED = ("latency_ms", "samples_ms", "temps_c_before", "temps_c_after", "operators", "sessions",
                       "interference", "flags")


def measurement_from_dict(d: dict) -> common_pb2.Measurement:
    m = common_pb2.Measurement()
    for key, value in d.items():
        if value is None or key in _MEASUREMENT_NESTED:
            continue
        if key in m.DESCRIPTOR.fields_by_name:
            setattr(m, key, value)
    if d.get("latency_ms"):
        m.latency_ms.CopyFrom(common_pb2.LatencySummary(**{f: d["latency_ms"][f] for f in _SUMMARY_FIELDS
                                                           if f in d["latency_ms"]}))
    m.samples_ms.extend(d.get("samples_ms") or [])
    m.temps_c_before.update(d.get("temps_c_before") or {})
    m.temps_c_after.update(d.get("temps_c_after") or {})
    m.operators.extend(common_pb2.OperatorProfile(**o) for o in d.get("operators") or [])
    m.sessions.extend(session_from_dict(x) for x in d.get("sessions") or [])
    if d.get("interference") is not None:
        m.interference.CopyFrom(interference_from_dict(d["interference"]))
    m.flags.extend(d.get("flags") or [])
    return m


def assignment_to_proto(a: dict) -> agent_pb2.JobAssignment:
    return agent_pb2.JobAssignment(
        job_id=a["job_id"], sweep_id=a["sweep_id"], platform_id=a["platform_id"], model_sha256=a["model_sha256"],
        model_size_bytes=int(a["model_size_bytes"]), model_format=a["model_format"], runtime=a["runtime"],
        provider=a["provider"], threads=int(a["threads"]), settings=settings_from_dict(a["settings"]),
        inputs=inputs_from_list(a["inputs"]), cooldown_s=a.get("cooldown_s", 0.0),
        max_start_temp_c=a.get("max_start_temp_c", 0.0), max_thermal_wait_s=a.get("max_thermal_wait_s", 0.0),
        profile_operators=a.get("profile_operators", False), reading=reading_from_dict(a.get("reading") or {}),
        job_kind=a.get("job_kind", ""))


def spec_to_dict(s: fleet_pb2.SweepSpec) -> dict:
    return {
        "name": s.name, "models": list(s.models),
        "platforms": {"platform_ids": list(s.platforms.platform_ids), "labels": dict(s.platforms.labels),
                      "runtimes": list(s.platforms.runtimes)},
        "threads": list(s.threads), "repeats": s.repeats, "settings": settings_to_dict(s.settings),
        "priority": s.priority, "inputs": inputs_to_list(s.inputs), "reading": reading_to_dict(s.reading),
        **{k: getattr(s, k) for k in _SPEC_EXTRAS if getattr(s, k)},
    }


def spec_from_dict(d: dict) -> fleet_pb2.SweepSpec:
    p = d.get("platforms") or {}
    return fleet_pb2.SweepSpec(
        name=d.get("name", ""), models=d.get("models", []),
        platforms=fleet_pb2.PlatformSelector(platform_ids=p.get("platform_ids", []), labels=p.get("labels", {}),
                                             runtimes=p.get("runtimes", [])),
        threads=d.get("threads", []), repeats=d.get("repeats", 0), settings=settings_from_dict(d.get("settings", {})),
        priority=d.get("priority", 0), inputs=inputs_from_list(d.get("inputs", [])),
        reading=reading_from_dict(d.get("reading") or {}), **{k: d[k] for k in _SPEC_EXTRAS if d.get(k)})


def progress_to_proto(p: dict) -> fleet_pb2.SweepProgress:
    return fleet_pb2.SweepProgress(
        sweep_id=p["sweep_id"], state=p["state"], total=p["total"], pending=p["pending"], leased=p["leased"],
        done=p["done"], failed=p["failed"], cancelled=p.get("cancelled", 0), updated_unix=p["updated_unix"],
        eta_s=p.get("eta_s", -1.0), platforms=[fleet_pb2.PlatformProgress(**x) for x in p.get("platforms", [])])


def sweep_to_proto(s: dict) -> fleet_pb2.Sweep:
    return fleet_pb2.Sweep(sweep_id=s["sweep_id"], name=s["name"], spec=spec_from_dict(s["spec"]),
                           progress=progress_to_proto(s["progress"]), created_unix=s["created_unix"],
                           platform_ids=s["platform_ids"])


def model_to_proto(m: dict) -> fleet_pb2.Model:
    info = m.get("info", {})

    def specs(items):
        return [fleet_pb2.TensorSpec(name=t["name"], dtype=t["dtype"], shape=t["shape"]) for t in items]

    return fleet_pb2.Model(sha256=m["sha256"], name=m["name"], format=m["format"], size_bytes=m["size_bytes"],
                           inputs=specs(info.get("inputs", [])), outputs=specs(info.get("outputs", [])),
                           node_count=info.get("node_count", 0), family=info.get("family", ""),
                           metadata_json=json.dumps(info.get("metadata", {}), sort_keys=True),
                           created_unix=m.get("created_unix", 0.0))


def device_to_proto(d: dict) -> fleet_pb2.Device:
    info = d.get("info", {})
    device = common_pb2.DeviceInfo(
        **{f: info[f] for f in _DEVICE_SCALARS if info.get(f) not in (None, "")},
        gpus=info.get("gpus", []), power_sensors=info.get("power_sensors", []),
        thermal_zones=info.get("thermal_zones", []),
        runtimes=[common_pb2.RuntimeInfo(name=r["name"], version=r["version"], providers=r.get("providers", []))
                  for r in info.get("runtimes", [])],
        hardware_json=json.dumps(info.get("hardware", {}), sort_keys=True))
    return fleet_pb2.Device(agent_id=d["agent_id"], name=d["name"], info=device, labels=d["labels"],
                            connected=d["connected"], state=d["state"], current_job_id=d["current_job_id"],
                            last_seen_unix=d["last_seen_unix"], platform_ids=d["platform_ids"],
                            suspended_reason=d.get("suspended_reason") or "")


def agent_token_to_proto(t: dict) -> fleet_pb2.AgentToken:
    return fleet_pb2.AgentToken(**{k: t[k] for k in ("token_id", "name", "agent_id", "created_unix",
                                                      "last_used_unix", "revoked_unix")})


_REFERENCE_FIELDS = ("model_sha256", "model_name", "median_ms", "session_spread", "flags", "finished_at_unix",
                     "readings", "drift")


def platform_to_proto(p: dict) -> fleet_pb2.Platform:
    """``noise_ceiling`` (``{within_5, within_10, pairs}``, shares ``None`` without pairs) and ``reference``
    (a dict or ``None``) are optional in ``p``; absent shares travel as 0 with ``pairs`` 0."""
    ceiling = p.get("noise_ceiling") or {}
    reference = p.get("reference")
    return fleet_pb2.Platform(
        platform_id=p["platform_id"], hardware=p["hardware"], runtime=p["runtime"],
        runtime_version=p["runtime_version"], provider=p["provider"], threads=p["threads"],
        labels=p["labels"], hardware_json=json.dumps(p["hardware_json"], sort_keys=True),
        agents_connected=p.get("agents_connected", 0), agents_total=p.get("agents_total", 0),
        noise_ceiling=fleet_pb2.NoiseCeiling(within_5=ceiling.get("within_5") or 0.0,
                                             within_10=ceiling.get("within_10") or 0.0,
                                             pairs=int(ceiling.get("pairs") or 0)),
        reference=(fleet_pb2.ReferenceReading(**{k: reference[k] for k in _REFERENCE_FIELDS
                                                 if reference.get(k) is not None})
                   if reference else None))
