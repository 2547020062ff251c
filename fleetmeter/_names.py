"""The rule for a platform name given by a user (``fleetmeter import``), shared by the CLI's CSV reader and
the controller, which checks it again at its boundary.

An imported platform id becomes a row in the store, a label in tables and a
key in the predictor registry, so it is kept to a small, safe alphabet:
``[A-Za-z0-9._:+@=/ -]``, 1 to :data:`MAX_PLATFORM_ID_CHARS` characters. ``/``
separates parts as in the ids the controller makes for its agents
(``cpu-4c-ab12cd/onnxruntime-1.20/cpu/t1``, which imports may name too), but no
part is empty, ``.`` or ``..`` (``../../x`` is refused), and no space starts or
ends the name or a part. Backslashes and control characters are refused (no
surprises in a terminal or a log).
"""
from __future__ import annotations

import re
from typing import Optional

__all__ = ["MAX_PLATFORM_ID_CHARS", "PLATFORM_ID_PATTERN", "platform_name_problem"]

MAX_PLATFORM_ID_CHARS = 128
#: What an imported platform id is made of (its length and ``..`` are checked apart).
PLATFORM_ID_PATTERN = re.compile(r"[A-Za-z0-9._:+@=/ -]+")


def platform_name_problem(name: str) -> Optional[str]:
    """``None`` for an acceptable imported platform id, else why not (a phrase: "must not be empty", ...)."""
    if not isinstance(name, str):
        return f"must be text, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_PLATFORM_ID_CHARS:
        return f"is {len(name)} characters long, at most {MAX_PLATFORM_ID_CHARS} allowed"
    if not PLATFORM_ID_PATTERN.fullmatch(name):
        bad = "".join(sorted({c for c in name if not PLATFORM_ID_PATTERN.fullmatch(c)})[:10])
        return (f"may only use letters, digits, spaces and . _ : + @ = / - (no backslash or control "
                f"characters), got {name[:64]!a} (refused: {bad!a})")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return f"must not have an empty, '.' or '..' part between '/', got {name[:64]!a}"
    if any(p != p.strip() for p in parts):
        return f"must not start or end (or have a part start or end) with a space, got {name[:64]!a}"
    return None
