"""Power sensors, exercised on constructed sysfs trees and a fake NVML module.

Sampled sensors get an injected step clock, so integrated energies are exact
and independent of how many samples the background thread happened to take.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

from fleetmeter.agent import power, sysfs
from fleetmeter.agent.power import (
    AndroidBatterySensor,
    EnergyWindow,
    Ina3221Sensor,
    NvmlEnergySensor,
    NvmlPowerSensor,
    PowerSensor,
    RaplSensor,
    SampledPowerSensor,
    battery_power_w,
    default_power_sensor,
    describe_power_sensors,
    discover_power_sensors,
)

from _support import FakeClock  # tests/ is on sys.path

FAST_S = 0.001  # sampling period for tests that let the thread run


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def write(root: Path, rel: str, content: object) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{content}\n")
    return path


def make_rapl_zone(root: Path, zone: str, name: str, energy_uj: int,
                   max_uj: int = 262_143_328_850) -> None:
    base = f"/sys/class/powercap/{zone}"
    write(root, f"{base}/name", name)
    write(root, f"{base}/energy_uj", energy_uj)
    write(root, f"{base}/max_energy_range_uj", max_uj)


def set_rapl(root: Path, zone: str, energy_uj: int) -> None:
    write(root, f"/sys/class/powercap/{zone}/energy_uj", energy_uj)


def make_battery(root: Path, current: int, voltage: int, status: str | None) -> None:
    base = "/sys/class/power_supply/battery"
    write(root, f"{base}/current_now", current)
    write(root, f"{base}/voltage_now", voltage)
    if status is not None:
        write(root, f"{base}/status", status)


INA_HWMON = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"


def make_ina_channel(root: Path, n: int, label: str, mv: int, ma: int) -> None:
    write(root, f"{INA_HWMON}/in{n}_label", label)
    write(root, f"{INA_HWMON}/in{n}_input", mv)
    write(root, f"{INA_HWMON}/curr{n}_input", ma)


def only(sensors: list, cls: type):
    found = [s for s in sensors if isinstance(s, cls)]
    assert len(found) == 1, sensors
    return found[0]


# --------------------------------------------------------------------------- #
# EnergyWindow
# --------------------------------------------------------------------------- #
def test_energy_window_average_power() -> None:
    assert EnergyWindow(energy_j=6.0, elapsed_s=2.0).avg_power_w == 3.0


def test_energy_window_rejects_negative_values() -> None:
    with pytest.raises(ValueError):
        EnergyWindow(energy_j=-1.0, elapsed_s=1.0)
    with pytest.raises(ValueError):
        EnergyWindow(energy_j=1.0, elapsed_s=-1.0)


def test_energy_window_zero_length_has_no_average() -> None:
    assert EnergyWindow(energy_j=0.0, elapsed_s=0.0).avg_power_w != 0.0  # NaN, not 0 W


# --------------------------------------------------------------------------- #
# Trapezoid integration in the sampling thread
# --------------------------------------------------------------------------- #
class FunctionSensor(SampledPowerSensor):
    """Power is a function of the sample's clock time; records what it saw."""

    def __init__(self, fn: Callable[[float], float], clock: FakeClock, *,
                 ready_after: int = 5, fail_every: int = 0) -> None:
        self.fn = fn
        self.clock = clock
        self.seen: list[tuple[float, float]] = []
        self.reads = 0
        self.ready = threading.Event()
        self.ready_after = ready_after
        self.fail_every = fail_every
        super().__init__("test:fn", period_s=FAST_S, clock=clock)

    def read_power_w(self) -> float:
        self.reads += 1
        if self.fail_every and self.reads % self.fail_every == 0:
            if self.reads >= self.ready_after:
                self.ready.set()
            raise OSError("flaky read")
        t = self.clock.now_s  # the timestamp the sensor just took
        p = self.fn(t)
        self.seen.append((t, p))
        if len(self.seen) >= self.ready_after:
            self.ready.set()
        return p

    def source(self) -> str:
        return "test"


def run_window(sensor: FunctionSensor) -> EnergyWindow | None:
    sensor.start()
    assert sensor.ready.wait(timeout=5.0), "sampling thread never sampled"
    return sensor.stop()


def assert_steady_power(sensor: PowerSensor, power_w: float) -> None:
    """One window of ``sensor`` over a constant load measures ``power_w`` for its whole length."""
    sensor.start()
    window = sensor.stop()
    assert window is not None, f"{sensor.name} measured nothing"
    assert window.elapsed_s > 0
    assert window.avg_power_w == pytest.approx(power_w)
    assert window.energy_j == pytest.approx(power_w * window.elapsed_s)


def test_trapezoid_constant_power_is_exact() -> None:
    clock = FakeClock(step_s=0.01)
    sensor = FunctionSensor(lambda t: 7.5, clock)
    window = run_window(sensor)
    assert window is not None
    t_first, t_last = sensor.seen[0][0], sensor.seen[-1][0]
    assert len(sensor.seen) >= 5  # start + thread samples + stop
    assert window.elapsed_s == pytest.approx(t_last - t_first, rel=1e-12)
    assert window.energy_j == pytest.approx(7.5 * (t_last - t_first), rel=1e-12)
    assert window.avg_power_w == pytest.approx(7.5, rel=1e-12)


def test_trapezoid_linear_power_is_exact() -> None:
    # p(t) = 2 + 3 (t - 100): the trapezoid rule is exact for linear power,
    # a left/right rectangle rule would be off by 3/2 * sum(dt^2).
    clock = FakeClock(start_s=100.0, step_s=0.01)
    sensor = FunctionSensor(lambda t: 2.0 + 3.0 * (t - 100.0), clock, ready_after=8)
    window = run_window(sensor)
    assert window is not None
    a, b = sensor.seen[0][0] - 100.0, sensor.seen[-1][0] - 100.0
    expected = 2.0 * (b - a) + 1.5 * (b * b - a * a)
    assert window.energy_j == pytest.approx(expected, rel=1e-9)


def test_trapezoid_bridges_failed_samples() -> None:
    clock = FakeClock(step_s=0.01)
    sensor = FunctionSensor(lambda t: 4.0, clock, ready_after=9, fail_every=3)
    window = run_window(sensor)
    assert window is not None
    t_first, t_last = sensor.seen[0][0], sensor.seen[-1][0]
    assert window.energy_j == pytest.approx(4.0 * (t_last - t_first), rel=1e-12)


def test_sampled_sensor_is_reusable_and_windows_are_independent() -> None:
    clock = FakeClock(step_s=0.01)
    level = {"p": 1.0}
    sensor = FunctionSensor(lambda t: level["p"], clock)
    first = run_window(sensor)
    level["p"] = 10.0
    sensor.seen.clear()
    sensor.ready.clear()
    second = run_window(sensor)
    assert first is not None and second is not None
    assert first.avg_power_w == pytest.approx(1.0)
    assert second.avg_power_w == pytest.approx(10.0)  # nothing carried over


def test_sampling_thread_ends_at_stop() -> None:
    sensor = FunctionSensor(lambda t: 1.0, FakeClock(step_s=0.01))
    run_window(sensor)
    assert not any(t.name.startswith("fleetmeter-power-test:fn") for t in threading.enumerate())


def test_all_samples_failing_gives_none() -> None:
    class Broken(SampledPowerSensor):
        def read_power_w(self) -> float:
            raise OSError("gone")

    sensor = Broken("test:broken", period_s=FAST_S, clock=FakeClock(step_s=0.01))
    sensor.start()
    assert sensor.stop() is None


# --------------------------------------------------------------------------- #
# RAPL
# --------------------------------------------------------------------------- #
def test_rapl_sums_packages_without_subzones(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    make_rapl_zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    make_rapl_zone(tmp_path, "intel-rapl:0:1", "uncore", 100_000)
    make_rapl_zone(tmp_path, "intel-rapl:1", "package-1", 2_000_000)
    make_rapl_zone(tmp_path, "intel-rapl:1:0", "dram", 300_000)
    make_rapl_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 1_000_000)  # duplicate view

    sensor = only(discover_power_sensors(tmp_path, nvml=False, clock=FakeClock(step_s=0.5)),
                  RaplSensor)
    assert sensor.name == "rapl:package-0+package-1"
    sensor.start()
    set_rapl(tmp_path, "intel-rapl:0", 4_000_000)      # +3 J
    set_rapl(tmp_path, "intel-rapl:0:0", 2_500_000)    # inside package-0: not added
    set_rapl(tmp_path, "intel-rapl:1", 3_500_000)      # +1.5 J
    set_rapl(tmp_path, "intel-rapl:1:0", 9_300_000)    # dram inside package-1: not added
    set_rapl(tmp_path, "intel-rapl-mmio:0", 4_000_000)
    window = sensor.stop()
    assert window is not None
    assert window.energy_j == pytest.approx(4.5)
    assert window.elapsed_s == pytest.approx(0.5)


def test_rapl_wraps_at_max_energy_range(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 262_000_000, max_uj=262_144_000)
    sensor = only(discover_power_sensors(tmp_path, nvml=False), RaplSensor)
    sensor.start()
    set_rapl(tmp_path, "intel-rapl:0", 100_000)
    window = sensor.stop()
    assert window is not None
    assert window.energy_j == pytest.approx((262_144_000 - 262_000_000 + 100_000) / 1e6)


def test_rapl_amd_layout_is_found(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "amd-rapl:0", "package-0", 10)
    sensor = only(discover_power_sensors(tmp_path, nvml=False), RaplSensor)
    assert sensor.name == "rapl:package-0"


def test_rapl_psys_not_added_to_packages(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    make_rapl_zone(tmp_path, "intel-rapl:1", "psys", 0)  # covers the package too
    sensor = only(discover_power_sensors(tmp_path, nvml=False), RaplSensor)
    assert sensor.name == "rapl:package-0"


def _deny(monkeypatch: pytest.MonkeyPatch, suffixes: tuple[str, ...]) -> None:
    real = sysfs.read_text

    def read(path: str, **kwargs: bool) -> str:
        if path.endswith(suffixes):
            raise PermissionError(13, "Permission denied", path)
        return real(path, **kwargs)

    monkeypatch.setattr(sysfs, "read_text", read)


def test_rapl_unreadable_counter_not_discovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    make_rapl_zone(tmp_path, "intel-rapl:1", "package-1", 5)
    _deny(monkeypatch, (os.path.join("intel-rapl:1", "energy_uj"),))
    sensor = only(discover_power_sensors(tmp_path, nvml=False), RaplSensor)
    assert sensor.name == "rapl:package-0"  # the readable package only

    _deny(monkeypatch, ("energy_uj",))
    with caplog.at_level(logging.DEBUG, logger="fleetmeter.agent.power"):
        assert discover_power_sensors(tmp_path, nvml=False) == []
    assert "Permission denied" in caplog.text


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files regardless of mode")
def test_rapl_chmod_000_not_discovered(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0)
    assert discover_power_sensors(tmp_path, nvml=False) == []


def test_rapl_counter_unreadable_at_stop_gives_none(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    sensor = only(discover_power_sensors(tmp_path, nvml=False), RaplSensor)
    sensor.start()
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").unlink()
    assert sensor.stop() is None


# --------------------------------------------------------------------------- #
# Android battery
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("current,voltage", [
    (-500_000, 4_000_000),  # µA, discharge negative
    (500_000, 4_000_000),   # µA, discharge positive
    (-500, 4_000_000),      # mA reported in current_now
    (500, 4_000),           # mA and mV
])
def test_battery_sign_and_unit_conventions_give_same_power(current: int, voltage: int) -> None:
    assert battery_power_w(current, voltage) == pytest.approx(2.0)


@pytest.mark.parametrize("current", [-500_000, 500_000, -500])
def test_android_battery_energy_while_discharging(tmp_path: Path, current: int) -> None:
    make_battery(tmp_path, current, 4_000_000, "Discharging")
    sensor = only(discover_power_sensors(tmp_path, nvml=False, period_s=FAST_S,
                                         clock=FakeClock(step_s=0.25)), AndroidBatterySensor)
    assert sensor.name == "android:battery"
    assert_steady_power(sensor, 2.0)


@pytest.mark.parametrize("status", ["Charging", "Full"])
def test_android_battery_charging_gives_none(tmp_path: Path, status: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    make_battery(tmp_path, 800_000, 4_200_000, status)
    sensor = only(discover_power_sensors(tmp_path, nvml=False, period_s=FAST_S,
                                         clock=FakeClock(step_s=0.01)), AndroidBatterySensor)
    with caplog.at_level(logging.WARNING, logger="fleetmeter.agent.power"):
        sensor.start()
        assert sensor.stop() is None
    assert status in caplog.text


def test_android_battery_plugged_mid_window_gives_none(tmp_path: Path) -> None:
    make_battery(tmp_path, -500_000, 4_000_000, "Discharging")
    sensor = only(discover_power_sensors(tmp_path, nvml=False, period_s=FAST_S,
                                         clock=FakeClock(step_s=0.01)), AndroidBatterySensor)
    sensor.start()
    write(tmp_path, "/sys/class/power_supply/battery/status", "Charging")
    assert sensor.stop() is None


def test_android_battery_unreadable_not_discovered(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    make_battery(tmp_path, -500_000, 4_000_000, "Discharging")
    _deny(monkeypatch, ("current_now",))
    assert discover_power_sensors(tmp_path, nvml=False) == []


# --------------------------------------------------------------------------- #
# Jetson INA3221
# --------------------------------------------------------------------------- #
def test_ina3221_prefers_vdd_in(tmp_path: Path) -> None:
    make_ina_channel(tmp_path, 1, "VDD_IN", 5000, 1000)             # 5.0 W
    make_ina_channel(tmp_path, 2, "VDD_CPU_GPU_CV", 5000, 400)      # 2.0 W
    make_ina_channel(tmp_path, 3, "VDD_SOC", 5000, 300)             # 1.5 W
    sensor = only(discover_power_sensors(tmp_path, nvml=False), Ina3221Sensor)
    assert sensor.name == "ina3221:VDD_IN"
    assert sensor.read_power_w() == pytest.approx(5.0)
    assert sensor.describe()["scope"] == "device"


def test_ina3221_sums_rails_without_total(tmp_path: Path) -> None:
    make_ina_channel(tmp_path, 1, "GPU", 19000, 100)                # 1.9 W
    make_ina_channel(tmp_path, 2, "CPU", 19000, 200)                # 3.8 W
    write(tmp_path, f"{INA_HWMON}/in7_label", "sum of shunt voltages")  # not a rail
    write(tmp_path, f"{INA_HWMON}/in7_input", 40)
    write(tmp_path, f"{INA_HWMON}/curr7_input", 300)
    sensor = only(discover_power_sensors(tmp_path, nvml=False), Ina3221Sensor)
    assert sensor.name == "ina3221:GPU+CPU"
    assert sensor.read_power_w() == pytest.approx(5.7)


def test_ina3221_energy_is_v_times_i_integrated(tmp_path: Path) -> None:
    make_ina_channel(tmp_path, 1, "VDD_IN", 4800, 2500)             # 12.0 W
    sensor = only(discover_power_sensors(tmp_path, nvml=False, period_s=FAST_S,
                                         clock=FakeClock(step_s=0.1)), Ina3221Sensor)
    assert_steady_power(sensor, 12.0)


def test_ina3221_legacy_iio_layout(tmp_path: Path) -> None:
    dev = "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    write(tmp_path, f"{dev}/rail_name_0", "POM_5V_IN")
    write(tmp_path, f"{dev}/in_power0_input", 3000)                 # mW
    write(tmp_path, f"{dev}/rail_name_1", "POM_5V_GPU")
    write(tmp_path, f"{dev}/in_power1_input", 1000)
    sensor = only(discover_power_sensors(tmp_path, nvml=False), Ina3221Sensor)
    assert sensor.name == "ina3221:POM_5V_IN"
    assert sensor.read_power_w() == pytest.approx(3.0)


# --------------------------------------------------------------------------- #
# NVML
# --------------------------------------------------------------------------- #
class FakeNvml:
    """Minimal stand-in for the pynvml module."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[dict]) -> None:
        self.devices = devices
        self.initialized = 0

    def nvmlInit(self) -> None:
        self.initialized += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if self.devices[h].get("energy_mj") is None:
            raise self.NVMLError("Not Supported")
        return self.devices[h]["energy_mj"]

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self.devices[h]["power_mw"]

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.devices[h]["name"].encode()


def test_nvml_energy_counter(tmp_path: Path) -> None:
    nvml = FakeNvml([{"energy_mj": 1_000, "power_mw": 1, "name": "H100"}])
    sensor = only(discover_power_sensors(tmp_path, nvml=nvml, clock=FakeClock(step_s=2.0)),
                  NvmlEnergySensor)
    assert sensor.name == "nvml:0"
    sensor.start()
    nvml.devices[0]["energy_mj"] = 3_500
    window = sensor.stop()
    assert window is not None
    assert window.energy_j == pytest.approx(2.5)
    assert window.elapsed_s == pytest.approx(2.0)


def test_nvml_falls_back_to_power_sampling(tmp_path: Path) -> None:
    nvml = FakeNvml([{"energy_mj": 5, "power_mw": 1, "name": "A"},
                     {"energy_mj": None, "power_mw": 150_000, "name": "B"}])
    sensors = discover_power_sensors(tmp_path, nvml=nvml, period_s=FAST_S,
                                     clock=FakeClock(step_s=0.1))
    assert [s.name for s in sensors] == ["nvml:0", "nvml:1"]
    sampled = only(sensors, NvmlPowerSensor)
    assert sampled.name == "nvml:1"
    assert_steady_power(sampled, 150.0)


def test_nvml_missing_module_means_no_sensor(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert discover_power_sensors(tmp_path) == []
    assert power.nvml_gpu_names() == []


def test_nvml_init_failure_means_no_sensor(tmp_path: Path) -> None:
    nvml = FakeNvml([{"energy_mj": 5, "power_mw": 1, "name": "A"}])

    def fail() -> None:
        raise FakeNvml.NVMLError("Driver Not Loaded")

    nvml.nvmlInit = fail  # type: ignore[method-assign]
    assert discover_power_sensors(tmp_path, nvml=nvml) == []


def test_nvml_gpu_names_decodes_bytes() -> None:
    nvml = FakeNvml([{"energy_mj": 5, "power_mw": 1, "name": "NVIDIA H100 80GB HBM3"}])
    assert power.nvml_gpu_names(nvml) == ["NVIDIA H100 80GB HBM3"]


# --------------------------------------------------------------------------- #
# discovery order, description, conformance
# --------------------------------------------------------------------------- #
def test_default_sensor_preference(tmp_path: Path) -> None:
    nvml = FakeNvml([{"energy_mj": 5, "power_mw": 1, "name": "A"}])
    make_battery(tmp_path, -500_000, 4_000_000, "Discharging")
    assert default_power_sensor(tmp_path, nvml=False).name == "android:battery"
    assert default_power_sensor(tmp_path, nvml=nvml).name == "nvml:0"
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    assert default_power_sensor(tmp_path, nvml=nvml).name == "rapl:package-0"
    make_ina_channel(tmp_path, 1, "VDD_IN", 5000, 100)
    assert default_power_sensor(tmp_path, nvml=nvml).name == "ina3221:VDD_IN"


def test_no_sensor_on_empty_tree(tmp_path: Path) -> None:
    assert default_power_sensor(tmp_path, nvml=False) is None
    assert describe_power_sensors(tmp_path, nvml=False) == []


def test_describe_power_sensors_is_json_ready(tmp_path: Path) -> None:
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    make_battery(tmp_path, -500_000, 4_000_000, "Discharging")
    described = json.loads(json.dumps(describe_power_sensors(tmp_path, nvml=False)))
    assert [(d["name"], d["kind"], d["default"]) for d in described] == [
        ("rapl:package-0", "counter", True),
        ("android:battery", "sampled", False),
    ]


def _all_kinds(root: Path) -> list[PowerSensor]:
    make_rapl_zone(root, "intel-rapl:0", "package-0", 1)
    make_ina_channel(root, 1, "VDD_IN", 5000, 100)
    make_battery(root, -500_000, 4_000_000, "Discharging")
    nvml = FakeNvml([{"energy_mj": 5, "power_mw": 1, "name": "A"},
                     {"energy_mj": None, "power_mw": 1, "name": "B"}])
    sensors = discover_power_sensors(root, nvml=nvml, period_s=FAST_S, clock=FakeClock(step_s=0.01))
    assert {type(s) for s in sensors} == {RaplSensor, Ina3221Sensor, NvmlEnergySensor,
                                          NvmlPowerSensor, AndroidBatterySensor}
    return sensors


def test_every_sensor_meets_the_contract(tmp_path: Path) -> None:
    for sensor in _all_kinds(tmp_path):
        assert isinstance(sensor, PowerSensor)
        assert isinstance(sensor.name, str) and ":" in sensor.name
        assert sensor.stop() is None, f"{sensor.name}: stop() without start()"
        for _ in range(2):  # reusable
            sensor.start()
            window = sensor.stop()
            assert isinstance(window, EnergyWindow), sensor.name
            assert window.energy_j >= 0 and window.elapsed_s > 0
        sensor.start()
        sensor.start()  # restart discards the window in progress
        assert isinstance(sensor.stop(), EnergyWindow)
    assert not any(t.name.startswith("fleetmeter-power") for t in threading.enumerate())
