"""Power sensors: energy consumed over a timed window, from hardware only.

A :class:`PowerSensor` measures the energy a device (or a package, or a GPU)
consumed between ``start()`` and ``stop()``. Two kinds exist:

* **counter** sensors read a monotonically increasing hardware energy counter
  at ``start()`` and at ``stop()`` (RAPL powercap, NVML total energy);
* **sampled** sensors read an instantaneous power and integrate it with the
  trapezoid rule, sampling in a background daemon thread every ``period_s``
  (Jetson INA3221, NVML power usage, Android battery current x voltage).

Every sysfs file is read below a configurable ``root`` (default ``"/"``) so
that tests build fake trees under a temporary directory and exercise exactly
the parsing code a real device runs. NVML is optional: ``pynvml`` (package
``nvidia-ml-py``: ``pip install nvidia-ml-py``) is imported lazily, and
when it is missing no NVML sensor is discovered.

Where a device has no sensor, energy is *absent*: nothing here estimates.

Default choice (:func:`default_power_sensor`), whole-device first:
INA3221 input rail (``VDD_IN``; else the sum of the rails) > RAPL package sum
> NVML (first GPU) > Android battery.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from fleetmeter.agent import sysfs

__all__ = [
    "DEFAULT_PERIOD_S",
    "AndroidBatterySensor",
    "CounterSensor",
    "EnergyWindow",
    "Ina3221Rail",
    "Ina3221Sensor",
    "NvmlEnergySensor",
    "NvmlPowerSensor",
    "PowerSensor",
    "RaplSensor",
    "RaplZone",
    "SampledPowerSensor",
    "SensorReadingInvalid",
    "battery_power_w",
    "default_power_sensor",
    "describe_power_sensors",
    "discover_power_sensors",
    "nvml_gpu_names",
]

logger = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 0.020

Clock = Callable[[], float]


# --------------------------------------------------------------------------- #
# Contract
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class EnergyWindow:
    """Energy consumed over a window: ``energy_j`` joules in ``elapsed_s`` seconds."""

    energy_j: float
    elapsed_s: float

    def __post_init__(self) -> None:
        if not (self.energy_j >= 0.0):  # also rejects NaN
            raise ValueError(f"energy_j must be >= 0, got {self.energy_j!r}")
        if not (self.elapsed_s >= 0.0):
            raise ValueError(f"elapsed_s must be >= 0, got {self.elapsed_s!r}")

    @property
    def avg_power_w(self) -> float:
        """Average power in watts; NaN for an empty (zero-length) window."""
        if self.elapsed_s <= 0.0:
            return float("nan")
        return self.energy_j / self.elapsed_s


@runtime_checkable
class PowerSensor(Protocol):
    """Measures the energy consumed between ``start()`` and ``stop()``.

    Contract:

    * ``name`` identifies the sensor and what it covers, e.g.
      ``"rapl:package-0"``, ``"nvml:0"``, ``"ina3221:VDD_IN"``,
      ``"android:battery"``. It is recorded beside every energy reading.
    * ``start()`` marks the beginning of the timed window. Calling it again
      restarts the window (a window in progress is discarded).
    * ``stop()`` ends the window and returns the energy consumed since
      ``start()`` as an :class:`EnergyWindow` (joules, seconds), or ``None``
      when the reading failed or is not meaningful (counter unreadable,
      battery charging, too few valid samples); the reason is logged.
      ``stop()`` without ``start()`` returns ``None``.
    * Sensors are reusable (``start``/``stop`` any number of times) and not
      thread-safe: one thread drives a sensor. Sampled sensors run their own
      daemon thread only between ``start()`` and ``stop()``.
    * ``start()``/``stop()`` do not raise on hardware read errors.
    """

    name: str

    def start(self) -> None: ...

    def stop(self) -> EnergyWindow | None: ...


class SensorReadingInvalid(Exception):
    """Raised by a sampled sensor's reader when the whole window is meaningless
    (e.g. the battery is charging); ``stop()`` then returns ``None``."""


# --------------------------------------------------------------------------- #
# Sampled (instantaneous power) sensors
# --------------------------------------------------------------------------- #
class SampledPowerSensor:
    """Base for sensors that integrate instantaneous power over time.

    Subclasses implement :meth:`read_power_w`: return watts; raise ``OSError``
    or ``ValueError`` for a failed sample (skipped, integration bridges the
    gap), or :class:`SensorReadingInvalid` to invalidate the whole window.

    ``start()`` takes one sample synchronously and starts a daemon thread that
    samples every ``period_s``; ``stop()`` wakes and joins the thread, takes a
    final sample synchronously and returns the trapezoid integral. The thread
    integrates as it goes (O(1) memory, no locks: ``stop()`` joins it before
    reading its state). The window's ``elapsed_s`` is the span covered by the
    first and last *valid* samples; if that covers less than half of the span
    between the first and last sample attempts (failed reads at either end)
    the window is ``None`` rather than a partial reading.
    """

    kind = "sampled"
    scope = "unknown"

    def __init__(self, name: str, *, period_s: float = DEFAULT_PERIOD_S,
                 clock: Clock = time.monotonic) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s!r}")
        self.name = name
        self.period_s = float(period_s)
        self._clock = clock
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._reset()

    # -- to implement ------------------------------------------------------ #
    def read_power_w(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def source(self) -> str:  # pragma: no cover - overridden
        return ""

    # -- integration ------------------------------------------------------- #
    def _reset(self) -> None:
        self._started = False
        self._t_first_try: float | None = None
        self._t_last_try: float | None = None
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._last_p: float | None = None
        self._energy_j = 0.0
        self._n_samples = 0
        self._n_failed = 0
        self._invalid_reason: str | None = None

    def _sample(self) -> None:
        if self._invalid_reason is not None:
            return
        t = self._clock()
        if self._t_first_try is None:
            self._t_first_try = t
        self._t_last_try = t
        try:
            p = float(self.read_power_w())
            if not math.isfinite(p):
                raise ValueError(f"non-finite power {p!r}")
        except SensorReadingInvalid as exc:
            self._invalid_reason = str(exc) or "reading invalid"
            return
        except (OSError, ValueError) as exc:
            self._n_failed += 1
            if self._n_failed == 1:
                logger.debug("%s: sample failed: %s", self.name, exc)
            return
        if self._last_t is None:
            self._first_t = t
        else:
            self._energy_j += 0.5 * (p + self._last_p) * (t - self._last_t)  # type: ignore[operator]
        self._last_t, self._last_p = t, p
        self._n_samples += 1

    def _run(self) -> None:
        wait = self._stop_event.wait
        period = self.period_s
        while not wait(period):
            self._sample()

    def start(self) -> None:
        self._halt_thread()
        self._reset()
        self._started = True
        self._sample()
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"fleetmeter-power-{self.name}", daemon=True)
        self._thread.start()

    def _halt_thread(self) -> None:
        if self._thread is not None:
            self._stop_event.set()
            self._thread.join()
            self._thread = None

    def stop(self) -> EnergyWindow | None:
        if not self._started:
            logger.warning("%s: stop() without start()", self.name)
            return None
        self._halt_thread()
        self._sample()
        self._started = False
        if self._invalid_reason is not None:
            logger.warning("%s: no energy reading: %s", self.name, self._invalid_reason)
            return None
        if self._n_samples < 2 or self._first_t is None or self._last_t is None:
            logger.warning("%s: no energy reading: %d valid samples (%d failed)",
                           self.name, self._n_samples, self._n_failed)
            return None
        covered_s = self._last_t - self._first_t
        window_s = (self._t_last_try or 0.0) - (self._t_first_try or 0.0)
        if window_s > 0 and covered_s < 0.5 * window_s:
            logger.warning("%s: no energy reading: samples cover %.3f s of %.3f s",
                           self.name, covered_s, window_s)
            return None
        return EnergyWindow(energy_j=max(self._energy_j, 0.0), elapsed_s=covered_s)

    @property
    def samples_taken(self) -> int:
        """Valid samples in the current/last window (for diagnostics)."""
        return self._n_samples

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "scope": self.scope,
                "source": self.source(), "period_s": self.period_s}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CounterSensor:
    """Base of the sensors that read a cumulative energy counter.

    ``start()`` reads the counter, ``stop()`` reads it again and returns the
    difference as an :class:`EnergyWindow`. A subclass gives ``_read()`` (the
    raw reading; it raises one of ``_read_errors()``, logged and answered with
    None) and ``_energy_j(start, end)`` (None, logged, when the difference
    cannot be trusted).
    """

    kind = "counter"

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self._t0: float | None = None
        self._start: Any = None

    def _read(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_errors(self) -> type[BaseException] | tuple[type[BaseException], ...]:
        return (OSError, ValueError)

    def _energy_j(self, start: Any, end: Any) -> float | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_or_none(self) -> Any:
        try:
            return self._read()
        except self._read_errors() as exc:
            logger.warning("%s: cannot read energy counter: %s", self.name, exc)
            return None

    def start(self) -> None:
        self._start = self._read_or_none()
        self._t0 = self._clock()

    def stop(self) -> EnergyWindow | None:
        end = self._read_or_none()
        t1 = self._clock()
        start, t0 = self._start, self._t0
        self._start, self._t0 = None, None
        if start is None or end is None or t0 is None:
            return None
        energy_j = self._energy_j(start, end)
        if energy_j is None:
            return None
        return EnergyWindow(energy_j=energy_j, elapsed_s=max(t1 - t0, 0.0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# --------------------------------------------------------------------------- #
# RAPL powercap (Intel, AMD)
# --------------------------------------------------------------------------- #
_RAPL_TOP_ZONE = re.compile(r"^(intel-rapl|amd-rapl):(\d+)$")


@dataclass(frozen=True)
class RaplZone:
    """One top-level powercap zone: its ``name`` file and energy counter."""

    name: str
    energy_path: str
    max_energy_range_uj: int


class RaplSensor(CounterSensor):
    """Counter sensor summing RAPL package zones (µJ counters with wrap-around).

    A wrap (end < start) is corrected by adding ``max_energy_range_uj``; more
    than one wrap inside a window is undetectable (the range is typically
    ~262 kJ, i.e. over an hour at 60 W).
    """

    scope = "package"

    def __init__(self, zones: list[RaplZone], *, clock: Clock = time.monotonic) -> None:
        if not zones:
            raise ValueError("RaplSensor needs at least one zone")
        self.zones = list(zones)
        super().__init__("rapl:" + "+".join(z.name for z in self.zones), clock)

    def _read(self) -> list[int]:
        return [sysfs.read_int(z.energy_path) for z in self.zones]

    def _energy_j(self, start: list[int], end: list[int]) -> float | None:
        total_uj = 0
        for zone, a, b in zip(self.zones, start, end):
            delta = b - a
            if delta < 0:
                delta += zone.max_energy_range_uj
            if delta < 0:
                logger.warning("%s: counter %s went backwards (%d -> %d)",
                               self.name, zone.name, a, b)
                return None
            total_uj += delta
        return total_uj / 1e6

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "scope": self.scope,
                "source": ",".join(os.path.dirname(z.energy_path) for z in self.zones)}


def _discover_rapl(root: str, clock: Clock) -> list[RaplSensor]:
    """Top-level package zones of /sys/class/powercap, summed into one sensor.

    Only ``intel-rapl:N`` / ``amd-rapl:N`` are considered; subzones
    (``intel-rapl:N:M``: core, uncore, dram) lie inside their package and are
    never added. ``intel-rapl-mmio:N`` duplicates the package on some Intel
    parts and is skipped. ``psys`` (platform) zones cover the packages too, so
    they are not summed with them; they are used only when no package exists.
    """
    base = sysfs.under(root, "/sys/class/powercap")
    try:
        entries = sorted(os.listdir(base), key=sysfs.natural_key)
    except OSError:
        return []
    packages: list[RaplZone] = []
    others: list[RaplZone] = []
    for entry in entries:
        if not _RAPL_TOP_ZONE.match(entry):
            continue
        zdir = os.path.join(base, entry)
        zname = sysfs.try_read_text(os.path.join(zdir, "name")) or entry
        energy_path = os.path.join(zdir, "energy_uj")
        try:
            sysfs.read_int(energy_path)
        except (OSError, ValueError) as exc:
            logger.debug("RAPL zone %s (%s) not usable: %s", entry, zname, exc)
            continue
        try:
            max_range = sysfs.read_int(os.path.join(zdir, "max_energy_range_uj"))
        except (OSError, ValueError):
            max_range = 0
            logger.debug("RAPL zone %s: no max_energy_range_uj; wrap-around undetectable", entry)
        zone = RaplZone(name=zname, energy_path=energy_path, max_energy_range_uj=max_range)
        (packages if zname.startswith("package") else others).append(zone)
    if packages:
        return [RaplSensor(packages, clock=clock)]
    if others:
        return [RaplSensor(others, clock=clock)]
    return []


# --------------------------------------------------------------------------- #
# NVML
# --------------------------------------------------------------------------- #
def _nvml_error(nvml: Any) -> type[BaseException]:
    err = getattr(nvml, "NVMLError", None)
    return err if isinstance(err, type) and issubclass(err, BaseException) else Exception


class NvmlEnergySensor(CounterSensor):
    """Counter sensor: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load)."""

    scope = "gpu"

    def __init__(self, nvml: Any, index: int, handle: Any, *,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(f"nvml:{index}", clock)
        self._nvml = nvml
        self.index = index
        self._handle = handle

    def _read(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def _read_errors(self) -> type[BaseException]:
        return _nvml_error(self._nvml)

    def _energy_j(self, start: int, end: int) -> float | None:
        if end < start:
            logger.warning("%s: energy counter went backwards (%d -> %d mJ)", self.name, start, end)
            return None
        return (end - start) / 1e3

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "scope": self.scope,
                "source": "nvmlDeviceGetTotalEnergyConsumption"}


class NvmlPowerSensor(SampledPowerSensor):
    """Sampled sensor: ``nvmlDeviceGetPowerUsage`` (mW), for GPUs without the counter."""

    scope = "gpu"

    def __init__(self, nvml: Any, index: int, handle: Any, *,
                 period_s: float = DEFAULT_PERIOD_S, clock: Clock = time.monotonic) -> None:
        self._nvml = nvml
        self.index = index
        self._handle = handle
        super().__init__(f"nvml:{index}", period_s=period_s, clock=clock)

    def read_power_w(self) -> float:
        try:
            return float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) / 1e3
        except _nvml_error(self._nvml) as exc:
            raise OSError(f"nvmlDeviceGetPowerUsage: {exc}") from exc

    def source(self) -> str:
        return "nvmlDeviceGetPowerUsage"


def _import_nvml() -> Any | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        logger.debug("pynvml not installed (pip install nvidia-ml-py); no NVML sensors")
        return None
    return pynvml


def _nvml_module(nvml: Any) -> Any | None:
    """``nvml``: a module-like object, ``None`` (import pynvml lazily) or ``False`` (off)."""
    if nvml is False:
        return None
    if nvml is None:
        return _import_nvml()
    return nvml


def _nvml_handles(nvml: Any) -> list[tuple[int, Any]]:
    err = _nvml_error(nvml)
    try:
        nvml.nvmlInit()
        count = int(nvml.nvmlDeviceGetCount())
    except err as exc:
        logger.debug("NVML unavailable: %s", exc)
        return []
    handles = []
    for i in range(count):
        try:
            handles.append((i, nvml.nvmlDeviceGetHandleByIndex(i)))
        except err as exc:
            logger.debug("NVML device %d: no handle: %s", i, exc)
    return handles


def _discover_nvml(nvml: Any, period_s: float, clock: Clock) -> list[PowerSensor]:
    sensors: list[PowerSensor] = []
    err = _nvml_error(nvml)
    for i, handle in _nvml_handles(nvml):
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            sensors.append(NvmlEnergySensor(nvml, i, handle, clock=clock))
            continue
        except err as exc:
            logger.debug("NVML device %d: no energy counter (%s); trying power usage", i, exc)
        try:
            nvml.nvmlDeviceGetPowerUsage(handle)
            sensors.append(NvmlPowerSensor(nvml, i, handle, period_s=period_s, clock=clock))
        except err as exc:
            logger.debug("NVML device %d: no power reading: %s", i, exc)
    return sensors


def nvml_gpu_names(nvml: Any = None) -> list[str]:
    """GPU names from NVML (``[]`` when NVML is missing or fails)."""
    mod = _nvml_module(nvml)
    if mod is None:
        return []
    names = []
    for i, handle in _nvml_handles(mod):
        try:
            name = mod.nvmlDeviceGetName(handle)
        except _nvml_error(mod) as exc:
            logger.debug("NVML device %d: no name: %s", i, exc)
            continue
        names.append(name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name))
    return names


# --------------------------------------------------------------------------- #
# Jetson INA3221
# --------------------------------------------------------------------------- #
# Rails that measure the whole module/board input on known Jetson boards.
_TOTAL_RAIL = re.compile(r"^(VDD_IN|POM_5V_IN|VIN|VIN_SYS_5V0|VDD_IN_SYS)$", re.IGNORECASE)


@dataclass(frozen=True)
class Ina3221Rail:
    """One INA3221 channel. Hwmon layout: bus voltage (mV) and current (mA)
    files; legacy iio layout: a power file (mW)."""

    label: str
    voltage_mv_path: str | None = None
    current_ma_path: str | None = None
    power_mw_path: str | None = None

    def read_power_w(self) -> float:
        if self.power_mw_path is not None:
            return sysfs.read_int(self.power_mw_path) / 1e3
        assert self.voltage_mv_path is not None and self.current_ma_path is not None
        mv = sysfs.read_int(self.voltage_mv_path)
        ma = sysfs.read_int(self.current_ma_path)
        return mv * ma / 1e6

    def source(self) -> str:
        return self.power_mw_path or f"{self.voltage_mv_path}*{self.current_ma_path}"


class Ina3221Sensor(SampledPowerSensor):
    """Sampled Jetson power: the total input rail, else the sum of the given rails."""

    def __init__(self, rails: list[Ina3221Rail], *, period_s: float = DEFAULT_PERIOD_S,
                 clock: Clock = time.monotonic) -> None:
        if not rails:
            raise ValueError("Ina3221Sensor needs at least one rail")
        self.rails = list(rails)
        if len(self.rails) == 1:
            name = f"ina3221:{self.rails[0].label}"
            self.scope = "device" if _TOTAL_RAIL.match(self.rails[0].label) else "rail"
        else:
            name = "ina3221:" + "+".join(r.label for r in self.rails)
            self.scope = "rails"
        super().__init__(name, period_s=period_s, clock=clock)

    def read_power_w(self) -> float:
        return sum(r.read_power_w() for r in self.rails)

    def source(self) -> str:
        return ",".join(r.source() for r in self.rails)


def _usable(rail: Ina3221Rail, where: str) -> bool:
    """Whether the rail reads now (found at ``where``); why not is logged at debug."""
    try:
        rail.read_power_w()
    except (OSError, ValueError) as exc:
        logger.debug("INA3221 rail %s at %s not usable: %s", rail.label, where, exc)
        return False
    return True


def _channel_files(root: str, device_glob: str, file_glob: str) -> Iterator[tuple[str, str]]:
    """``(device dir, file)`` for each file matching ``file_glob`` in each device dir matching
    ``device_glob`` (an absolute device path), both in natural order."""
    for dev in sorted(glob.glob(sysfs.under(root, device_glob)), key=sysfs.natural_key):
        for path in sorted(glob.glob(os.path.join(dev, file_glob)), key=sysfs.natural_key):
            yield dev, path


def _ina3221_hwmon_rails(root: str) -> list[Ina3221Rail]:
    rails = []
    for hw, label_path in _channel_files(root, "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*", "in*_label"):
        m = re.match(r"^in(\d+)_label$", os.path.basename(label_path))
        if not m:
            continue
        n = m.group(1)
        label = sysfs.try_read_text(label_path)
        # "sum of shunt voltages" channels carry a shunt, not a bus, voltage.
        if not label or label.lower().startswith("sum"):
            continue
        enable = sysfs.try_read_text(os.path.join(hw, f"in{n}_enable"))
        if enable is not None and enable.strip() == "0":
            continue
        v_path = os.path.join(hw, f"in{n}_input")
        i_path = os.path.join(hw, f"curr{n}_input")
        rail = Ina3221Rail(label=label, voltage_mv_path=v_path, current_ma_path=i_path)
        if _usable(rail, hw):
            rails.append(rail)
    return rails


def _ina3221_iio_rails(root: str) -> list[Ina3221Rail]:
    rails = []
    for dev, name_path in _channel_files(root, "/sys/bus/i2c/drivers/ina3221x/*/iio:device*", "rail_name_*"):
        n = name_path.rsplit("_", 1)[-1]
        label = sysfs.try_read_text(name_path)
        if not label or not n.isdigit():
            continue
        rail = Ina3221Rail(label=label, power_mw_path=os.path.join(dev, f"in_power{n}_input"))
        if _usable(rail, dev):
            rails.append(rail)
    return rails


def _discover_ina3221(root: str, period_s: float, clock: Clock) -> list[PowerSensor]:
    rails = _ina3221_hwmon_rails(root) or _ina3221_iio_rails(root)
    if not rails:
        return []
    totals = [r for r in rails if _TOTAL_RAIL.match(r.label)]
    chosen = totals[:1] if totals else rails
    return [Ina3221Sensor(chosen, period_s=period_s, clock=clock)]


# --------------------------------------------------------------------------- #
# Android battery
# --------------------------------------------------------------------------- #
# Above this magnitude current_now is read as µA (the kernel ABI), below as mA
# (some vendors): 10000 µA = 10 mA is implausibly low for an awake phone, and
# 10000 mA = 10 A implausibly high.
_MA_THRESHOLD = 10_000
_NOT_DRAWN_STATUSES = {"charging", "full"}


def battery_power_w(current_raw: int, voltage_raw: int) -> float:
    """Power drawn from the battery, in watts, from raw ``current_now``/``voltage_now``.

    Rule: power = |I| x V. Vendors disagree on the sign of the discharge
    current (negative on some, positive on others), so the sign is ignored and
    the status file decides whether the battery is discharging. Units: current
    in µA per the kernel ABI, but values with |I| < 10000 are taken as mA;
    voltage in µV, but values < 100000 are taken as mV (and < 100 as V).
    """
    i = abs(int(current_raw))
    current_a = i / 1e6 if i >= _MA_THRESHOLD else i / 1e3
    v = abs(int(voltage_raw))
    if v >= 100_000:
        voltage_v = v / 1e6
    elif v >= 100:
        voltage_v = v / 1e3
    else:
        voltage_v = float(v)
    return current_a * voltage_v


class AndroidBatterySensor(SampledPowerSensor):
    """Sampled battery power (current_now x voltage_now), see :func:`battery_power_w`.

    While ``status`` says ``Charging`` (or ``Full``: the charger feeds the
    device) the battery current is not the energy the device draws, so the
    window is invalid and ``stop()`` returns ``None`` with the reason logged.
    """

    scope = "battery"

    def __init__(self, supply_dir: str, *, period_s: float = DEFAULT_PERIOD_S,
                 clock: Clock = time.monotonic) -> None:
        self.supply_dir = supply_dir
        self._current = os.path.join(supply_dir, "current_now")
        self._voltage = os.path.join(supply_dir, "voltage_now")
        self._status = os.path.join(supply_dir, "status")
        super().__init__("android:battery", period_s=period_s, clock=clock)

    def read_power_w(self) -> float:
        status = sysfs.try_read_text(self._status)
        if status is not None and status.lower() in _NOT_DRAWN_STATUSES:
            raise SensorReadingInvalid(
                f"battery status is {status!r}: power comes from the charger, not the battery")
        return battery_power_w(sysfs.read_int(self._current), sysfs.read_int(self._voltage))

    def source(self) -> str:
        return self.supply_dir


def _discover_android_battery(root: str, period_s: float, clock: Clock) -> list[PowerSensor]:
    supply = sysfs.under(root, "/sys/class/power_supply/battery")
    if not os.path.isdir(supply):
        return []
    try:
        sysfs.read_int(os.path.join(supply, "current_now"))
        sysfs.read_int(os.path.join(supply, "voltage_now"))
    except (OSError, ValueError) as exc:
        logger.debug("battery power supply at %s not readable: %s", supply, exc)
        return []
    return [AndroidBatterySensor(supply, period_s=period_s, clock=clock)]


# --------------------------------------------------------------------------- #
# Discovery
# --------------------------------------------------------------------------- #
def discover_power_sensors(root: str | os.PathLike[str] = "/", nvml: Any = None, *,
                           period_s: float = DEFAULT_PERIOD_S,
                           clock: Clock = time.monotonic) -> list[PowerSensor]:
    """All usable power sensors, in order of preference (see module docstring).

    ``nvml``: an NVML module object (tests inject a fake), ``None`` to import
    ``pynvml`` lazily if installed, or ``False`` to skip NVML.
    """
    root = os.fspath(root)
    sensors: list[PowerSensor] = []
    sensors += _discover_ina3221(root, period_s, clock)
    sensors += _discover_rapl(root, clock)
    mod = _nvml_module(nvml)
    if mod is not None:
        sensors += _discover_nvml(mod, period_s, clock)
    sensors += _discover_android_battery(root, period_s, clock)
    for s in sensors:
        logger.debug("power sensor found: %s", s.name)
    return sensors


def default_power_sensor(root: str | os.PathLike[str] = "/", nvml: Any = None, *,
                         period_s: float = DEFAULT_PERIOD_S,
                         clock: Clock = time.monotonic) -> PowerSensor | None:
    """The sensor covering the most of the device: INA3221 input rail > RAPL
    package sum > NVML (first GPU) > Android battery; ``None`` when none exists."""
    sensors = discover_power_sensors(root, nvml, period_s=period_s, clock=clock)
    return sensors[0] if sensors else None


def describe_power_sensors(root: str | os.PathLike[str] = "/",
                           nvml: Any = None) -> list[dict[str, Any]]:
    """JSON-ready description of every sensor; the first is the default."""
    out = []
    for i, sensor in enumerate(discover_power_sensors(root, nvml)):
        describe = getattr(sensor, "describe", None)
        d = dict(describe()) if callable(describe) else {"name": sensor.name}
        d["default"] = i == 0
        out.append(d)
    return out
