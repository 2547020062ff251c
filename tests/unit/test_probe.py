"""Device probe on constructed /proc, /sys and /etc trees (and once on this machine)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fleetmeter.agent import probe as probe_mod
from fleetmeter.agent.probe import DeviceProbe, hardware_identity, probe_device

# 4 logical CPUs on 2 physical cores (two threads each); one socket.
X86_CPUINFO = "\n".join(
    f"processor\t: {i}\n" + ("vendor_id\t: GenuineIntel\n" if i == 0 else "")
    + f"model name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\nphysical id\t: 0\ncore id\t\t: {i // 2}\n"
    for i in range(4))

RPI_CPUINFO = """\
processor\t: 0
model name\t: ARMv7 Processor rev 3 (v7l)
CPU implementer\t: 0x41
CPU part\t: 0xd08

processor\t: 1
model name\t: ARMv7 Processor rev 3 (v7l)
CPU implementer\t: 0x41
CPU part\t: 0xd08

Hardware\t: BCM2711
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

PHONE_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 38.40\nCPU implementer\t: 0x41\n"
    f"CPU part\t: {'0xd05' if i < 4 else '0xd0b'}\n\n" for i in range(8))

MEMINFO = "MemTotal:       16318480 kB\nMemFree:         1234 kB\n"

NO_NVML = {"nvml": False, "environ": {}, "include_runtimes": False}


def write(root: Path, rel: str, content: str) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def cpufreq(root: Path, cpu: int, khz: int, siblings: str | None = None) -> None:
    write(root, f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq", f"{khz}\n")
    if siblings is not None:
        write(root, f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list",
              f"{siblings}\n")


def test_x86_server(tmp_path: Path) -> None:
    write(tmp_path, "/proc/cpuinfo", X86_CPUINFO)
    write(tmp_path, "/proc/meminfo", MEMINFO)
    write(tmp_path, "/etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    write(tmp_path, "/etc/os-release", 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    for cpu, khz in enumerate((3_900_000, 3_900_000, 2_100_000, 2_100_000)):
        cpufreq(tmp_path, cpu, khz)
    p = probe_device(tmp_path, **NO_NVML)
    assert p.cpu_model == "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"
    assert p.cpu_cores_logical == 4
    assert p.cpu_cores_physical == 2          # from (physical id, core id) pairs
    assert p.cpu_max_freq_mhz == 3900.0
    assert p.memory_total_bytes == 16318480 * 1024
    assert p.host_id == "0123456789abcdef0123456789abcdef"
    assert p.host_id_source == "machine-id"
    assert p.os_distro == "Ubuntu 22.04.4 LTS"
    assert p.device_model is None
    assert p.is_android is False


def test_raspberry_pi(tmp_path: Path) -> None:
    write(tmp_path, "/proc/cpuinfo", RPI_CPUINFO)
    write(tmp_path, "/proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    write(tmp_path, "/var/lib/dbus/machine-id", "dbus-id\n")
    cpufreq(tmp_path, 0, 1_800_000, "0")
    cpufreq(tmp_path, 1, 1_800_000, "1")
    p = probe_device(tmp_path, **NO_NVML)
    assert p.cpu_model == "BCM2711"                      # "Hardware", not "ARMv7 Processor"
    assert p.device_model == "Raspberry Pi 4 Model B Rev 1.4"  # NUL stripped
    assert p.cpu_cores_logical == 2 and p.cpu_cores_physical == 2
    assert p.cpu_max_freq_mhz == 1800.0
    assert (p.host_id, p.host_id_source) == ("dbus-id", "dbus-machine-id")


def test_smt_physical_cores_from_topology(tmp_path: Path) -> None:
    write(tmp_path, "/proc/cpuinfo", "processor : 0\n\nprocessor : 1\n\n"
                                     "processor : 2\n\nprocessor : 3\n")
    for cpu, sib in enumerate(("0,2", "1,3", "0,2", "1,3")):
        cpufreq(tmp_path, cpu, 2_000_000, sib)
    p = probe_device(tmp_path, **NO_NVML)
    assert (p.cpu_cores_logical, p.cpu_cores_physical) == (4, 2)


def test_android_phone(tmp_path: Path) -> None:
    write(tmp_path, "/proc/cpuinfo", PHONE_CPUINFO)
    write(tmp_path, "/system/build.prop",
          "ro.product.model=Pixel 7\nro.product.manufacturer=Google\n"
          "ro.build.version.release=14\n")
    write(tmp_path, "/sys/class/kgsl/kgsl-3d0/gpu_model", "Adreno730v2\n")
    p = probe_device(tmp_path, nvml=False, environ={"ANDROID_ROOT": "/system"},
                     include_runtimes=False)
    assert p.is_android and p.android_release == "14"
    assert p.device_model == "Google Pixel 7"
    assert p.cpu_model == "4x Cortex-A55 + 4x Cortex-A76"
    assert p.cpu_cores_logical == 8
    assert p.gpu_names == ["Adreno730v2"]
    assert p.memory_total_bytes is None and p.cpu_max_freq_mhz is None  # files missing


def test_generic_hostname_falls_back_to_boot_id(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_mod.socket, "gethostname", lambda: "localhost")
    write(tmp_path, "/proc/sys/kernel/random/boot_id", "b00t-1d\n")
    p = probe_device(tmp_path, **NO_NVML)
    assert (p.host_id, p.host_id_source) == ("b00t-1d", "boot-id")


def test_hostname_is_last_resort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_mod.socket, "gethostname", lambda: "xeon-07")
    p = probe_device(tmp_path, **NO_NVML)
    assert (p.host_id, p.host_id_source) == ("xeon-07", "hostname")


def test_jetson_gpu_sensors_and_temperatures(tmp_path: Path) -> None:
    write(tmp_path, "/proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    write(tmp_path, "/proc/device-tree/compatible",
          "nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234\x00")
    hw = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    write(tmp_path, f"{hw}/in1_label", "VDD_IN\n")
    write(tmp_path, f"{hw}/in1_input", "5000\n")
    write(tmp_path, f"{hw}/curr1_input", "1000\n")
    write(tmp_path, "/sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(tmp_path, "/sys/class/thermal/thermal_zone0/temp", "48500\n")
    p = probe_device(tmp_path, **NO_NVML)
    assert p.gpu_names == ["NVIDIA Orin (Ampere) integrated GPU"]
    assert [s["name"] for s in p.power_sensors] == ["ina3221:VDD_IN"]
    assert p.power_sensors[0]["default"] is True
    assert p.thermal_zones == {"cpu-thermal": 48.5}


def test_empty_tree_does_not_raise(tmp_path: Path) -> None:
    p = probe_device(tmp_path, **NO_NVML)
    assert p.cpu_model is None and p.memory_total_bytes is None
    assert p.power_sensors == [] and p.thermal_zones == {}
    assert "none" in p.format_text()


def test_runtimes_missing_module_is_tolerated(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fleetmeter.agent.runtimes", None)
    p = probe_device(tmp_path, nvml=False, environ={})
    assert p.runtimes == []


def test_runtimes_are_included(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    fake = types.ModuleType("fleetmeter.agent.runtimes")
    fake.describe_runtimes = lambda: [  # type: ignore[attr-defined]
        {"name": "onnxruntime", "version": "1.18.0", "providers": ["CPUExecutionProvider"]}]
    monkeypatch.setitem(sys.modules, "fleetmeter.agent.runtimes", fake)
    p = probe_device(tmp_path, nvml=False, environ={})
    assert p.runtimes[0]["name"] == "onnxruntime"
    assert "onnxruntime 1.18.0 [CPUExecutionProvider]" in p.format_text()


def test_json_round_trip_and_text(tmp_path: Path) -> None:
    write(tmp_path, "/proc/cpuinfo", X86_CPUINFO)
    write(tmp_path, "/proc/meminfo", MEMINFO)
    p = probe_device(tmp_path, **NO_NVML)
    d = json.loads(json.dumps(p.to_json_dict()))
    assert DeviceProbe(**d) == p
    text = p.format_text()
    assert "Intel(R) Xeon(R) Gold 6230" in text and "15.6 GiB" in text


def test_hardware_identity_ignores_the_host(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "/proc/cpuinfo", X86_CPUINFO)
    write(tmp_path, "/proc/meminfo", MEMINFO)
    write(tmp_path, "/etc/machine-id", "aaaa\n")
    monkeypatch.setattr(probe_mod.socket, "gethostname", lambda: "box-a")
    a = probe_device(tmp_path, **NO_NVML)
    write(tmp_path, "/etc/machine-id", "bbbb\n")
    write(tmp_path, "/proc/meminfo", "MemTotal:       16400000 kB\n")  # same 16 GiB model
    monkeypatch.setattr(probe_mod.socket, "gethostname", lambda: "box-b")
    b = probe_device(tmp_path, **NO_NVML)
    assert a.host_id != b.host_id
    ident = hardware_identity(a)
    assert ident == hardware_identity(b)
    assert ident["memory_gib"] == 16
    assert ident["cpu_model"] == "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"
    assert "host_id" not in ident and "hostname" not in ident
    json.dumps(ident)


def test_real_machine() -> None:
    p = probe_device("/", include_runtimes=False)
    assert p.arch and p.host_id and p.os_system
    json.dumps(p.to_json_dict())
    assert p.format_text().count("\n") > 5


def test_agent_sensor_modules_stay_light() -> None:
    # The agent runs on phones: these modules must not pull heavy packages.
    import subprocess

    code = (
        "import sys\n"
        "import fleetmeter.agent.power, fleetmeter.agent.thermal, fleetmeter.agent.probe\n"
        "heavy = ('ray', 'pandas', 'psutil', 'lightgbm', 'pynvml', 'numpy',\n"
        "         'fleetmeter.controller', 'fleetmeter.modeler')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"
