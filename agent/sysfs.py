"""Reading small sysfs/procfs files under an injectable root.

The sensor and probe modules (:mod:`~fleetmeter.agent.power`,
:mod:`~fleetmeter.agent.thermal`, :mod:`~fleetmeter.agent.probe`,
:mod:`~fleetmeter.agent.interference`) read the kernel's files through these
helpers so that tests can point them at a constructed tree (``root``) and take
the same code path as on a real device. Standard library only: the agent
stays light.

Every read goes through :func:`read_text`; a test that wants a file to be
unreadable patches that one function.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["under", "read_text", "read_int", "try_read_text", "natural_key"]


def under(root: str | os.PathLike[str], path: str) -> str:
    """``path`` (absolute, as on a device) inside the tree at ``root``."""
    return os.path.join(os.fspath(root), path.lstrip("/"))


def read_text(path: str, *, strip: bool = True) -> str:
    """Read a small sysfs/procfs file (UTF-8, undecodable bytes replaced).

    Surrounding whitespace is removed unless ``strip`` is false. Raises
    ``OSError`` when the file cannot be read.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return text.strip() if strip else text


def read_int(path: str) -> int:
    """Read an integer attribute; raises ``OSError`` or ``ValueError``."""
    return int(read_text(path))


def try_read_text(path: str, *, strip: bool = True) -> str | None:
    """Like :func:`read_text`, but ``None`` (logged at debug) when unreadable."""
    try:
        return read_text(path, strip=strip)
    except OSError as exc:
        logger.debug("%s unreadable: %s", path, exc)
        return None


def natural_key(path: str) -> list[Any]:
    """Sort key that orders ``cpu2`` before ``cpu10`` (digit runs compare as numbers)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]
