"""Thermal zones and hwmon temperatures on constructed sysfs trees."""
from __future__ import annotations

from pathlib import Path

import pytest

from fleetmeter.agent import sysfs
from fleetmeter.agent.thermal import hottest_temp_c, read_thermal_zones


def write(root: Path, rel: str, content: object) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{content}\n")
    return path


def zone(root: Path, index: int, ztype: str, milli_c: object | None) -> None:
    write(root, f"/sys/class/thermal/thermal_zone{index}/type", ztype)
    if milli_c is not None:
        write(root, f"/sys/class/thermal/thermal_zone{index}/temp", milli_c)


def test_millidegrees_become_celsius(tmp_path: Path) -> None:
    zone(tmp_path, 0, "x86_pkg_temp", 54250)
    zone(tmp_path, 1, "cpu-thermal", -1500)
    assert read_thermal_zones(tmp_path) == {"x86_pkg_temp": 54.25, "cpu-thermal": -1.5}


def test_duplicate_types_are_keyed_by_zone_index(tmp_path: Path) -> None:
    zone(tmp_path, 0, "acpitz", 30000)
    zone(tmp_path, 2, "acpitz", 45000)
    zone(tmp_path, 10, "gpu-thermal", 50000)
    assert read_thermal_zones(tmp_path) == {
        "acpitz#0": 30.0, "acpitz#2": 45.0, "gpu-thermal": 50.0}


def test_unreadable_or_broken_zones_are_skipped(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    zone(tmp_path, 0, "good", 40000)
    zone(tmp_path, 1, "missing-temp", None)
    zone(tmp_path, 2, "garbage", "not a number")
    zone(tmp_path, 3, "sentinel", 255000)       # 255 °C: implausible
    zone(tmp_path, 4, "denied", 41000)
    real = sysfs.read_text

    def read(path: str, **kwargs: bool) -> str:
        if "thermal_zone4" in path and path.endswith("temp"):
            raise PermissionError(13, "Permission denied", path)
        return real(path, **kwargs)

    monkeypatch.setattr(sysfs, "read_text", read)
    assert read_thermal_zones(tmp_path) == {"good": 40.0}


def test_hwmon_temperatures_with_labels(tmp_path: Path) -> None:
    for hw, sock in (("hwmon1", 0), ("hwmon2", 1)):
        base = f"/sys/class/hwmon/{hw}"
        write(tmp_path, f"{base}/name", "coretemp")
        write(tmp_path, f"{base}/temp1_label", f"Package id {sock}")
        write(tmp_path, f"{base}/temp1_input", 60000 + sock * 1000)
        write(tmp_path, f"{base}/temp2_label", "Core 0")
        write(tmp_path, f"{base}/temp2_input", 58000 + sock * 1000)
    write(tmp_path, "/sys/class/hwmon/hwmon3/name", "k10temp")
    write(tmp_path, "/sys/class/hwmon/hwmon3/temp1_input", 70500)  # no label
    assert read_thermal_zones(tmp_path) == {
        "coretemp/Package id 0": 60.0,
        "coretemp/Package id 1": 61.0,
        "coretemp/Core 0#hwmon1": 58.0,
        "coretemp/Core 0#hwmon2": 59.0,
        "k10temp/temp1": 70.5,
    }
    assert read_thermal_zones(tmp_path, include_hwmon=False) == {}


def test_missing_sysfs_gives_empty(tmp_path: Path) -> None:
    assert read_thermal_zones(tmp_path) == {}


def test_hottest() -> None:
    assert hottest_temp_c({"a": 41.0, "b": 77.5, "c": -3.0}) == 77.5
    assert hottest_temp_c({}) is None


def test_real_machine_does_not_raise() -> None:
    temps = read_thermal_zones("/")
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in temps.items())
