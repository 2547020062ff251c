"""The data model: typed ids, and the one rule that turns a wire message into its plain record and back.

Every concept that crosses a process (a reading, a job, a sweep, a platform, a device, a prediction) is defined
once, as a message in ``protos/fleetmeter/v1``. Inside a process it lives either as that message (typed by the
generated ``.pyi``) or as its *record*: the plain JSON-able dict the store keeps, the ``--json`` outputs print and
the validators check. :func:`to_record` and :func:`from_record` are the only conversion between the two, derived
from the message's descriptor, so no module keeps its own list of a message's fields:

- a scalar becomes its value; a scalar with presence (``optional`` in the proto) becomes ``None`` when absent,
  or, with ``omit_absent``, is left out (settings where "absent" means "the agent's default");
- a message field becomes its record, or ``None`` when not set (with ``omit_absent``: the record of the empty
  message, ``{}`` for settings); a repeated field a list; a map a dict;
- 64-bit integers stay ``int`` (``json_format`` would make them strings).

Typed ids (:class:`AgentId`, :class:`JobId` ...) are ``NewType`` s over ``str``: free at run time, and a type
checker catches a job id passed where an agent id belongs.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, NewType, Optional, TypeVar

from google.protobuf.message import Message

__all__ = ["AgentId", "JobId", "SweepId", "PlatformId", "ModelSha256", "MeasurementId", "TokenId",
           "to_record", "from_record", "fill", "RecordError"]

AgentId = NewType("AgentId", str)
JobId = NewType("JobId", str)
SweepId = NewType("SweepId", str)
PlatformId = NewType("PlatformId", str)
ModelSha256 = NewType("ModelSha256", str)
MeasurementId = NewType("MeasurementId", str)
TokenId = NewType("TokenId", str)

M = TypeVar("M", bound=Message)


class RecordError(ValueError):
    """A record that does not fit its message: a key the message does not have, or a value of the wrong type."""


def _is_map(field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def to_record(message: Message, *, omit_absent: bool = False) -> dict[str, Any]:
    """The plain record of ``message`` (see the module docstring for the rule)."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = ({k: to_record(v, omit_absent=omit_absent) for k, v in value.items()}
                               if value_field.message_type is not None else dict(value))
        elif field.is_repeated:
            out[field.name] = ([to_record(v, omit_absent=omit_absent) for v in value]
                               if field.message_type is not None else list(value))
        elif field.has_presence and field.message_type is None and not message.HasField(field.name):
            if not omit_absent:
                out[field.name] = None
        elif field.message_type is not None and not omit_absent and not message.HasField(field.name):
            out[field.name] = None
        elif field.message_type is not None:
            out[field.name] = to_record(value, omit_absent=omit_absent)
        else:
            out[field.name] = value
    return out


def from_record(message_type: type[M], record: Mapping[str, Any], *, ignore: Iterable[str] = (),
                ignore_unknown: bool = False) -> M:
    """The message of ``message_type`` that ``record`` describes; ``None`` values stay unset.

    A key the message does not have raises :class:`RecordError` (a misspelt field must not vanish), unless it is
    named in ``ignore`` (keys a record carries for its own process, e.g. an agent's local path) or
    ``ignore_unknown`` is set (a stored record that carries more than the message, e.g. an import's source line).
    """
    message = message_type()
    fill(message, record, ignore=ignore, ignore_unknown=ignore_unknown)
    return message


def fill(message: Message, record: Mapping[str, Any], *, ignore: Iterable[str] = (),
         ignore_unknown: bool = False) -> None:
    """Set ``message``'s fields from ``record`` (see :func:`from_record`)."""
    fields = message.DESCRIPTOR.fields_by_name
    unknown = set(record) - set(fields) - set(ignore)
    if unknown and not ignore_unknown:
        raise RecordError(f"{message.DESCRIPTOR.name} has no field {', '.join(sorted(unknown))}")
    for name, value in record.items():
        field = fields.get(name)
        if field is None or value is None:
            continue
        try:
            _set(message, field, value, ignore_unknown)
        except (TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"{message.DESCRIPTOR.name}.{name}: {exc}") from exc


def _set(message: Message, field, value: Any, ignore_unknown: bool) -> None:
    target = getattr(message, field.name)
    nested = field.message_type is not None
    if _is_map(field):
        if field.message_type.fields_by_name["value"].message_type is not None:
            for k, v in value.items():
                fill(target[k], v, ignore_unknown=ignore_unknown)
        else:
            target.update(value)
    elif field.is_repeated and nested:
        for item in value:
            fill(target.add(), item, ignore_unknown=ignore_unknown)
    elif field.is_repeated:
        target.extend(value)
    elif nested:
        fill(target, value, ignore_unknown=ignore_unknown)
        target.SetInParent()  # an empty record still marks the field set
    else:
        setattr(message, field.name, value)
