"""The one set of sysfs helpers every agent sensor/probe reads through."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fleetmeter.agent import sysfs


def test_under_places_device_paths_inside_the_root(tmp_path: Path) -> None:
    assert sysfs.under(tmp_path, "/sys/class/thermal") == str(tmp_path / "sys/class/thermal")
    assert sysfs.under("/", "/proc/stat") == "/proc/stat"


def test_read_text_strips_unless_asked_not_to(tmp_path: Path) -> None:
    f = tmp_path / "value"
    f.write_bytes(b" 42\n\xff\n")
    assert sysfs.read_text(str(f)) == "42\n\ufffd"           # undecodable byte replaced
    assert sysfs.read_text(str(f), strip=False) == " 42\n\ufffd\n"
    f.write_text("1234\n")
    assert sysfs.read_int(str(f)) == 1234


def test_unreadable_file_raises_or_gives_none(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(OSError):
        sysfs.read_text(missing)
    with caplog.at_level(logging.DEBUG, logger="fleetmeter.agent.sysfs"):
        assert sysfs.try_read_text(missing) is None
    assert "missing" in caplog.text


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["hwmon10", "hwmon2", "hwmon1", "in10_label", "in2_label"]
    assert sorted(names, key=sysfs.natural_key) == [
        "hwmon1", "hwmon2", "hwmon10", "in2_label", "in10_label"]
