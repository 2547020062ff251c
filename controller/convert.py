"""Proto messages ↔ the plain records the fleet and the store work with: the controller's edge.

The rule for a message's record is one, in ``fleetmeter/records.py`` (derived from the proto's descriptors: int64
stays int, an absent optional is ``None``); this module only names the conversions the controller makes and adds
what the rule cannot know (JSON carried in strings, rows that join several messages).
"""
from __future__ import annotations

import json

from fleetmeter import fields
from fleetmeter.records import from_record, to_record
from fleetmeter.v1 import agent_pb2, common_pb2, fleet_pb2

from .limits import MAX_HARDWARE_JSON_BYTES, MAX_PROBE_JSON_BYTES, json_object

_SPEC_EXTRAS = fields.SPEC_EXTRAS


def settings_to_dict(s: common_pb2.BenchSettings) -> dict:
    """Only the fields that are set: an absent one means "the agent's default"."""
    return to_record(s, omit_absent=True)


def settings_from_dict(d: dict) -> common_pb2.BenchSettings:
    return from_record(common_pb2.BenchSettings, d)


def reading_to_dict(r: common_pb2.ReadingSettings) -> dict:
    """Only the fields that are set: an absent one means "the agent's default"."""
    return to_record(r, omit_absent=True)


def reading_from_dict(d: dict) -> common_pb2.ReadingSettings:
    return from_record(common_pb2.ReadingSettings, d)


def inputs_to_list(inputs) -> list[dict]:
    return [to_record(i, omit_absent=True) for i in inputs]


def inputs_from_list(items: list[dict]) -> list[common_pb2.InputOverride]:
    return [from_record(common_pb2.InputOverride, i) for i in items]


def hello_to_dict(h: agent_pb2.Hello) -> dict:
    record = to_record(h)
    device = record["device"] = to_record(h.device)  # an old agent's hello may lack it: its empty record
    # Parsed here, at the edge: malformed, non-object or oversized JSON is the agent's bad input
    # (INVALID_ARGUMENT naming the field), not a JSONDecodeError deeper in.
    hardware_json, probe_json = device.pop("hardware_json"), device.pop("probe_json")
    device["hardware"] = json_object(hardware_json, "device.hardware_json", MAX_HARDWARE_JSON_BYTES) \
        if hardware_json else {"arch": h.device.arch, "cpu_model": h.device.cpu_model, "cores": h.device.cpu_cores}
    device["probe"] = json_object(probe_json, "device.probe_json", MAX_PROBE_JSON_BYTES) if probe_json else {}
    return record


def measurement_to_dict(m: common_pb2.Measurement) -> dict:
    """A reading's record: what the store keeps and ``results --json`` prints."""
    return to_record(m)


def measurement_from_dict(d: dict) -> common_pb2.Measurement:
    """A stored record back to the wire; keys a record carries beyond the message (an import's source) stay."""
    return from_record(common_pb2.Measurement, d, ignore_unknown=True)


def assignment_to_proto(a: dict) -> agent_pb2.JobAssignment:
    """A job the fleet assigned (its record plus ``agent_id``, the recipient, which the message does not carry)."""
    return from_record(agent_pb2.JobAssignment, a, ignore=("agent_id",))


def spec_to_dict(s: fleet_pb2.SweepSpec) -> dict:
    """The sweep as submitted: settings and reading only with the fields set, the extras only when not zero."""
    record = to_record(s, omit_absent=True)
    return {k: v for k, v in record.items() if k not in _SPEC_EXTRAS or v}


def spec_from_dict(d: dict) -> fleet_pb2.SweepSpec:
    return from_record(fleet_pb2.SweepSpec, d, ignore_unknown=True)


def progress_to_proto(p: dict) -> fleet_pb2.SweepProgress:
    return from_record(fleet_pb2.SweepProgress, p)


def sweep_to_proto(s: dict) -> fleet_pb2.Sweep:
    """A sweep row (with its progress) → the wire; the row's own columns (state, priority ...) stay behind."""
    return from_record(fleet_pb2.Sweep, s, ignore_unknown=True)


def model_to_proto(m: dict) -> fleet_pb2.Model:
    """A model row → the wire: its inspected info (inputs, outputs, node count, family) flattened in."""
    info = m.get("info", {})
    return from_record(fleet_pb2.Model, {
        **m, **{k: info.get(k) for k in ("inputs", "outputs", "node_count", "family")},
        "metadata_json": json.dumps(info.get("metadata", {}), sort_keys=True)}, ignore_unknown=True)


def device_to_proto(d: dict) -> fleet_pb2.Device:
    """A device of the fleet's listing → the wire; its probe stays home (``fleetmeter-agent probe`` shows it)."""
    info = d.get("info") or {}
    message = from_record(fleet_pb2.Device, {**d, "info": None, "suspended_reason": d.get("suspended_reason") or ""},
                          ignore_unknown=True)
    message.info.CopyFrom(from_record(common_pb2.DeviceInfo, {k: v for k, v in info.items()
                                                              if k not in ("hardware", "probe")}, ignore_unknown=True))
    message.info.hardware_json = json.dumps(info.get("hardware", {}), sort_keys=True)
    return message


def agent_token_to_proto(t: dict) -> fleet_pb2.AgentToken:
    """The token's row without its hash (the message has no field for it)."""
    return from_record(fleet_pb2.AgentToken, t, ignore_unknown=True)


def platform_to_proto(p: dict) -> fleet_pb2.Platform:
    """``noise_ceiling`` (``{within_5, within_10, pairs}``, shares ``None`` without pairs) and ``reference``
    (a dict or ``None``) are optional in ``p``; absent shares travel as 0 with ``pairs`` 0."""
    return from_record(fleet_pb2.Platform, {**p, "hardware_json": json.dumps(p["hardware_json"], sort_keys=True),
                                            "noise_ceiling": p.get("noise_ceiling") or {}}, ignore_unknown=True)
