"""Temperatures from sysfs thermal zones and hwmon sensors.

Read before and after every benchmark; a hot device cools down before its
next job. All files are read below ``root`` so tests build fake trees.

Keys:

* thermal zones: the zone ``type`` (``"x86_pkg_temp"``, ``"cpu-thermal"``);
  when several zones share a type, each of them is keyed ``"<type>#<index>"``
  (e.g. ``"acpitz#0"``, ``"acpitz#1"``) so keys do not depend on read order;
* hwmon: ``"<name>/<label>"`` (e.g. ``"coretemp/Package id 0"``,
  ``"k10temp/Tctl"``), the label defaulting to ``tempN``; duplicates get
  ``"#hwmon<index>"`` appended.

Values are millidegrees Celsius in sysfs (kernel ABI) and °C here. Unreadable
zones and values outside -50..200 °C (sentinels, broken sensors) are skipped.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from collections import Counter
from typing import Iterator, Mapping

from fleetmeter.agent import sysfs

__all__ = ["hottest_temp_c", "read_thermal_zones"]

logger = logging.getLogger(__name__)

_MIN_PLAUSIBLE_C = -50.0
_MAX_PLAUSIBLE_C = 200.0


def _read_temp_c(path: str) -> float | None:
    try:
        temp_c = sysfs.read_int(path) / 1000.0
    except (OSError, ValueError) as exc:
        logger.debug("temperature %s unreadable: %s", path, exc)
        return None
    if not _MIN_PLAUSIBLE_C <= temp_c <= _MAX_PLAUSIBLE_C:
        logger.debug("temperature %s implausible: %.1f C", path, temp_c)
        return None
    return temp_c


def _numbered_dirs(root: str, prefix: str, name_file: str) -> Iterator[tuple[int, str, str]]:
    """``(n, dir, name)`` for each ``<prefix><n>`` directory (``prefix`` is an absolute device path)
    whose ``name_file`` reads; the others are skipped (logged at debug)."""
    for path in glob.glob(sysfs.under(root, prefix + "*")):
        m = re.search(re.escape(os.path.basename(prefix)) + r"(\d+)$", path)
        if not m:
            continue
        name = sysfs.try_read_text(os.path.join(path, name_file))
        if name is not None:
            yield int(m.group(1)), path, name


def _thermal_zones(root: str) -> dict[str, float]:
    zones = sorted(  # (index, type, zone dir)
        (index, ztype or f"thermal_zone{index}", zdir)
        for index, zdir, ztype in _numbered_dirs(root, "/sys/class/thermal/thermal_zone", "type"))
    counts = Counter(t for _, t, _ in zones)
    out: dict[str, float] = {}
    for index, ztype, zdir in zones:
        temp_c = _read_temp_c(os.path.join(zdir, "temp"))
        if temp_c is None:
            continue
        key = ztype if counts[ztype] == 1 else f"{ztype}#{index}"
        out[key] = temp_c
    return out


def _hwmon(root: str) -> dict[str, float]:
    found: list[tuple[str, int, float]] = []
    for hw_index, hw, name in _numbered_dirs(root, "/sys/class/hwmon/hwmon", "name"):
        for inp in sorted(glob.glob(os.path.join(hw, "temp*_input")), key=sysfs.natural_key):
            stem = os.path.basename(inp)[: -len("_input")]
            temp_c = _read_temp_c(inp)
            if temp_c is None:
                continue
            label = sysfs.try_read_text(os.path.join(hw, f"{stem}_label")) or stem
            found.append((f"{name}/{label}", hw_index, temp_c))
    found.sort(key=lambda x: (x[1], sysfs.natural_key(x[0])))
    counts = Counter(k for k, _, _ in found)
    return {(k if counts[k] == 1 else f"{k}#hwmon{i}"): t for k, i, t in found}


def read_thermal_zones(root: str | os.PathLike[str] = "/", *,
                       include_hwmon: bool = True) -> dict[str, float]:
    """Current temperatures in °C, keyed as described in the module docstring.

    Missing directories give an empty dict; this never raises on I/O errors.
    """
    root = os.fspath(root)
    temps = _thermal_zones(root)
    if include_hwmon:
        for key, temp_c in _hwmon(root).items():
            temps.setdefault(key, temp_c)
    return temps


def hottest_temp_c(temps: Mapping[str, float]) -> float | None:
    """The highest temperature in ``temps`` (°C), or ``None`` when empty."""
    return max(temps.values()) if temps else None
