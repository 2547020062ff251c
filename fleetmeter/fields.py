"""Field lists of the wire messages, derived from the proto (the one place they are defined).

Every layer that copies message fields to dicts, flags or dataclasses takes its list from here, so a field
added to the proto travels without another list to edit.
"""
from __future__ import annotations

from fleetmeter.v1 import common_pb2, fleet_pb2

__all__ = ["SETTINGS_FIELDS", "READING_FIELDS", "SPEC_SCALARS", "SPEC_EXTRAS", "PLATFORM_SELECTOR_FIELDS",
           "INPUT_FIELDS", "python_kind"]


def python_kind(field) -> type:
    """The Python type a scalar proto field holds: bool, int, float or str."""
    if field.type == field.TYPE_BOOL:
        return bool
    if field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        return float
    if field.type == field.TYPE_STRING:
        return str
    return int


def _scalars(message) -> tuple[str, ...]:
    return tuple(f.name for f in message.DESCRIPTOR.fields if f.message_type is None and not f.is_repeated)


#: BenchSettings: how one session is timed (warm-up, run counts and durations, stability).
SETTINGS_FIELDS = tuple(f.name for f in common_pb2.BenchSettings.DESCRIPTOR.fields)
#: ReadingSettings: sessions per reading and the interference guard's thresholds.
READING_FIELDS = tuple(f.name for f in common_pb2.ReadingSettings.DESCRIPTOR.fields)
#: SweepSpec's scalar fields (name, repeats, priority, max_device_failures, cooldown_s, ...).
SPEC_SCALARS = _scalars(fleet_pb2.SweepSpec)
#: The scalar fields stored with a sweep as they are (not name, repeats and priority, which have columns).
SPEC_EXTRAS = tuple(f for f in SPEC_SCALARS if f not in ("name", "repeats", "priority"))
PLATFORM_SELECTOR_FIELDS = tuple(f.name for f in fleet_pb2.PlatformSelector.DESCRIPTOR.fields)
INPUT_FIELDS = tuple(f.name for f in common_pb2.InputOverride.DESCRIPTOR.fields)
