"""What device is this? A probe of OS, CPU, memory, GPU, runtimes and sensors.

The probe is sent in the agent's hello and shown by ``fleetmeter-agent probe``.
Every file is read below ``root`` so tests build fake ``/proc`` and ``/sys``
trees; every file may be missing (a phone under Termux lacks many), in which
case the field is ``None`` / empty rather than an error.

:func:`hardware_identity` extracts the fields that identify the *hardware
model* (two identical boards give the same identity), as opposed to
``host_id`` which identifies one physical host (so that agents on the same
host never measure at the same time).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from fleetmeter.agent import sysfs
from fleetmeter.agent.power import describe_power_sensors, nvml_gpu_names
from fleetmeter.agent.thermal import read_thermal_zones

__all__ = ["DeviceProbe", "hardware_identity", "probe_device"]

logger = logging.getLogger(__name__)

_GENERIC_HOSTNAMES = {"", "localhost", "localhost.localdomain", "android"}

# ARM Ltd (implementer 0x41) CPU part numbers, for SoCs whose /proc/cpuinfo
# names no model. Unknown parts are shown as "0x41:0xd4f".
_ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
    0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78",
    0xD42: "Cortex-A78AE", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
    0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C", 0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3", 0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720",
    0xD82: "Cortex-X4",
}
_IMPLEMENTERS = {0x41: "ARM", 0x4E: "NVIDIA", 0x51: "Qualcomm", 0x61: "Apple", 0x48: "HiSilicon"}
_NVIDIA_PARTS = {0x003: "Denver 2", 0x004: "Carmel"}

_TEGRA_GPUS = {
    "tegra234": "NVIDIA Orin (Ampere) integrated GPU",
    "tegra194": "NVIDIA Xavier (Volta) integrated GPU",
    "tegra186": "NVIDIA TX2 (Pascal) integrated GPU",
    "tegra210": "NVIDIA Tegra X1 (Maxwell) integrated GPU",
}


@dataclass
class DeviceProbe:
    """Description of one device. All fields are JSON-serializable."""

    os_system: str
    os_release: str
    os_distro: str | None
    arch: str
    hostname: str
    host_id: str
    host_id_source: str  # "machine-id" | "dbus-machine-id" | "hostname" | "boot-id"
    python_version: str
    cpu_model: str | None
    device_model: str | None
    cpu_cores_logical: int | None
    cpu_cores_physical: int | None
    cpu_max_freq_mhz: float | None
    memory_total_bytes: int | None
    gpu_names: list[str] = field(default_factory=list)
    is_android: bool = False
    android_release: str | None = None
    runtimes: list[dict[str, Any]] = field(default_factory=list)
    power_sensors: list[dict[str, Any]] = field(default_factory=list)
    thermal_zones: dict[str, float] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """A plain dict that ``json.dumps`` accepts."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def format_text(self) -> str:
        """A readable multi-line report for humans."""

        def show(value: Any, unit: str = "") -> str:
            return "unknown" if value in (None, "") else f"{value}{unit}"

        mem = (f"{self.memory_total_bytes / 2**30:.1f} GiB"
               if self.memory_total_bytes else "unknown")
        cores = show(self.cpu_cores_logical)
        if self.cpu_cores_physical:
            cores += f" logical, {self.cpu_cores_physical} physical"
        os_line = f"{self.os_system} {self.os_release}"
        if self.os_distro:
            os_line += f" ({self.os_distro})"
        if self.is_android:
            os_line += f"; Android {show(self.android_release)}"
        freq = (f"{self.cpu_max_freq_mhz:.0f} MHz" if self.cpu_max_freq_mhz else "unknown")
        lines = [
            f"Host:          {self.hostname} (host id {self.host_id[:12]}, from {self.host_id_source})",
            f"OS:            {os_line}",
            f"Python:        {self.python_version}",
            f"Device model:  {show(self.device_model)}",
            f"CPU:           {show(self.cpu_model)} [{self.arch}]",
            f"Cores:         {cores}",
            f"Max frequency: {freq}",
            f"Memory:        {mem}",
            f"GPU:           {', '.join(self.gpu_names) or 'none found'}",
            "Runtimes:",
        ]
        if self.runtimes:
            for rt in self.runtimes:
                providers = rt.get("providers") or []
                extra = f" [{', '.join(map(str, providers))}]" if providers else ""
                lines.append(f"  {rt.get('name')} {rt.get('version', '')}{extra}")
        else:
            lines.append("  none found")
        lines.append("Power sensors:")
        if self.power_sensors:
            for s in self.power_sensors:
                mark = " (default)" if s.get("default") else ""
                lines.append(f"  {s.get('name')}: {s.get('kind', '?')}, "
                             f"{s.get('scope', '?')}{mark}")
        else:
            lines.append("  none (energy will not be measured)")
        lines.append("Temperatures:")
        if self.thermal_zones:
            for key, temp_c in sorted(self.thermal_zones.items()):
                lines.append(f"  {key}: {temp_c:.1f} C")
        else:
            lines.append("  none readable")
        return "\n".join(lines)


def hardware_identity(probe: DeviceProbe) -> dict[str, Any]:
    """Fields identifying the hardware *model*, not the individual host.

    Memory is rounded to the nearest GiB (MemTotal is a little below the
    installed size, by an amount that depends on the model and kernel).
    """
    mem_gib = (round(probe.memory_total_bytes / 2**30)
               if probe.memory_total_bytes else None)
    return {
        "arch": probe.arch,
        "cpu_model": probe.cpu_model,
        "cpu_cores_logical": probe.cpu_cores_logical,
        "cpu_cores_physical": probe.cpu_cores_physical,
        "memory_gib": mem_gib,
        "gpu": ", ".join(sorted(probe.gpu_names)) or None,
        "device_model": probe.device_model,
    }


# --------------------------------------------------------------------------- #
# file helpers
# --------------------------------------------------------------------------- #
def _read(root: str, path: str) -> str | None:
    """The file's whole text (unstripped), or ``None`` when unreadable."""
    return sysfs.try_read_text(sysfs.under(root, path), strip=False)


def _parse_key_values(text: str, sep: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if sep in line:
            k, v = line.split(sep, 1)
            out.setdefault(k.strip(), v.strip().strip('"'))
    return out


# --------------------------------------------------------------------------- #
# pieces
# --------------------------------------------------------------------------- #
def _os_distro(root: str) -> str | None:
    text = _read(root, "/etc/os-release")
    if not text:
        return None
    kv = _parse_key_values(text, "=")
    return kv.get("PRETTY_NAME") or (f"{kv.get('NAME', '')} {kv.get('VERSION_ID', '')}".strip()
                                     or None)


def _host_id(root: str, hostname: str) -> tuple[str, str]:
    for path, source in (("/etc/machine-id", "machine-id"),
                         ("/var/lib/dbus/machine-id", "dbus-machine-id")):
        text = (_read(root, path) or "").strip()
        if text:
            return text, source
    if hostname.strip().lower() not in _GENERIC_HOSTNAMES:
        return hostname, "hostname"
    boot_id = (_read(root, "/proc/sys/kernel/random/boot_id") or "").strip()
    if boot_id:
        logger.warning("no machine-id and a generic hostname %r: host id taken from the "
                       "boot id, which changes at every reboot", hostname)
        return boot_id, "boot-id"
    return hostname, "hostname"


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in re.split(r"\n\s*\n", text):
        kv = _parse_key_values(chunk, ":")
        if kv:
            blocks.append(kv)
    return blocks


def _arm_core_name(block: Mapping[str, str]) -> str | None:
    try:
        impl = int(block["CPU implementer"], 0)
        part = int(block["CPU part"], 0)
    except (KeyError, ValueError):
        return None
    if impl == 0x41 and part in _ARM_PARTS:
        return _ARM_PARTS[part]
    if impl == 0x4E and part in _NVIDIA_PARTS:
        return f"NVIDIA {_NVIDIA_PARTS[part]}"
    vendor = _IMPLEMENTERS.get(impl, f"{impl:#x}")
    return f"{vendor} {part:#x}"


def _cpu_model(blocks: list[dict[str, str]]) -> str | None:
    """x86: "model name". ARM: "Hardware" (the SoC), else the core types from
    "CPU implementer"/"CPU part" ("4x Cortex-A55 + 4x Cortex-A76"), else any
    "model name"/"Processor" line."""
    merged: dict[str, str] = {}
    for b in blocks:
        for k, v in b.items():
            merged.setdefault(k, v)
    model_name = merged.get("model name")
    if model_name and not model_name.startswith("ARMv"):
        return model_name
    if merged.get("Hardware"):
        return merged["Hardware"]
    counts: dict[str, int] = {}
    for b in blocks:
        core = _arm_core_name(b)
        if core:
            counts[core] = counts.get(core, 0) + 1
    if counts:
        return " + ".join(f"{n}x {core}" for core, n in counts.items())
    return model_name or merged.get("Processor") or merged.get("cpu model") or None


def _parse_cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            cpus.update(range(int(a), int(b) + 1))
        else:
            cpus.add(int(part))
    return cpus


def _cpu_dirs(root: str) -> list[str]:
    """Paths (relative to ``root``) of the cpuN directories."""
    base = sysfs.under(root, "/sys/devices/system/cpu")
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return [f"/sys/devices/system/cpu/{d}" for d in names if re.fullmatch(r"cpu\d+", d)]


def _cores(root: str, blocks: list[dict[str, str]]) -> tuple[int | None, int | None]:
    logical: int | None = sum(1 for b in blocks if "processor" in b) or None
    if logical is None:
        present = _read(root, "/sys/devices/system/cpu/present")
        if present:
            try:
                logical = len(_parse_cpu_list(present)) or None
            except ValueError:
                logical = None
    if logical is None and root == "/":
        logical = os.cpu_count()

    physical: int | None = None
    siblings: set[str] = set()
    for d in _cpu_dirs(root):
        for name in ("core_cpus_list", "thread_siblings_list"):
            text = _read(root, os.path.join(d, "topology", name))
            if text is not None:
                siblings.add(text.strip())
                break
    if siblings:
        physical = len(siblings)
    else:
        pairs = {(b.get("physical id", "0"), b["core id"]) for b in blocks if "core id" in b}
        physical = len(pairs) or None
    return logical, physical


def _max_freq_mhz(root: str) -> float | None:
    best: int | None = None
    for d in _cpu_dirs(root):
        text = _read(root, os.path.join(d, "cpufreq", "cpuinfo_max_freq"))
        try:
            khz = int((text or "").strip())
        except ValueError:
            continue
        best = khz if best is None else max(best, khz)
    return best / 1000.0 if best else None


def _memory_total_bytes(root: str) -> int | None:
    text = _read(root, "/proc/meminfo")
    if not text:
        return None
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def _device_tree_model(root: str) -> str | None:
    text = _read(root, "/proc/device-tree/model")
    model = (text or "").replace("\x00", "").strip()
    return model or None


def _android_props(root: str, environ: Mapping[str, str]) -> dict[str, str] | None:
    """Build properties when running on Android, else ``None``."""
    text = _read(root, "/system/build.prop")
    if text is None and "ANDROID_ROOT" not in environ:
        return None
    props = _parse_key_values(text or "", "=")
    if "ro.product.model" not in props and root == "/" and shutil.which("getprop"):
        for key in ("ro.product.model", "ro.product.manufacturer", "ro.build.version.release"):
            try:
                out = subprocess.run(["getprop", key], capture_output=True, text=True,
                                     timeout=2, check=False).stdout.strip()
            except (OSError, subprocess.SubprocessError) as exc:
                logger.debug("getprop %s failed: %s", key, exc)
                continue
            if out:
                props[key] = out
    return props


def _jetson_gpu(root: str) -> str | None:
    compat = (_read(root, "/proc/device-tree/compatible") or "").split("\x00")
    for entry in compat:
        soc = entry.strip().rsplit(",", 1)[-1]
        if soc in _TEGRA_GPUS:
            return _TEGRA_GPUS[soc]
    return None


def _mobile_gpu(root: str) -> str | None:
    adreno = (_read(root, "/sys/class/kgsl/kgsl-3d0/gpu_model") or "").strip()
    if adreno:
        return adreno
    mali = (_read(root, "/sys/class/misc/mali0/device/gpuinfo") or "").strip()
    if mali:
        return mali.split()[0]
    return None


def _runtimes() -> list[dict[str, Any]]:
    try:
        from fleetmeter.agent.runtimes import describe_runtimes
    except (ImportError, AttributeError) as exc:
        logger.warning("runtime description unavailable: %s", exc)
        return []
    return list(describe_runtimes())


# --------------------------------------------------------------------------- #
# entry point
# --------------------------------------------------------------------------- #
def probe_device(root: str | os.PathLike[str] = "/", *, nvml: Any = None,
                 environ: Mapping[str, str] | None = None,
                 include_runtimes: bool = True) -> DeviceProbe:
    """Probe this device (or the fake tree at ``root``).

    ``nvml``: NVML module for GPU names and sensors (``None``: import
    ``pynvml`` lazily; ``False``: skip). ``environ``: environment used to
    detect Android (default ``os.environ``). OS, architecture, hostname and
    Python version always come from the running interpreter.
    """
    root = os.fspath(root)
    environ = os.environ if environ is None else environ
    uname = platform.uname()
    hostname = socket.gethostname() or uname.node
    host_id, host_id_source = _host_id(root, hostname)

    blocks = _cpuinfo_blocks(_read(root, "/proc/cpuinfo") or "")
    logical, physical = _cores(root, blocks)

    android = _android_props(root, environ)
    device_model = _device_tree_model(root)
    if android is not None and android.get("ro.product.model"):
        maker = android.get("ro.product.manufacturer", "")
        model = android["ro.product.model"]
        device_model = f"{maker} {model}" if maker and not model.startswith(maker) else model
    if device_model is None:
        merged = {k: v for b in blocks for k, v in b.items()}
        device_model = merged.get("Model") or None  # Raspberry Pi cpuinfo

    gpus = nvml_gpu_names(nvml)
    for extra in (_jetson_gpu(root), _mobile_gpu(root)):
        if extra and extra not in gpus:
            gpus.append(extra)

    return DeviceProbe(
        os_system=uname.system,
        os_release=uname.release,
        os_distro=_os_distro(root),
        arch=uname.machine,
        hostname=hostname,
        host_id=host_id,
        host_id_source=host_id_source,
        python_version=platform.python_version() or sys.version.split()[0],
        cpu_model=_cpu_model(blocks),
        device_model=device_model,
        cpu_cores_logical=logical,
        cpu_cores_physical=physical,
        cpu_max_freq_mhz=_max_freq_mhz(root),
        memory_total_bytes=_memory_total_bytes(root),
        gpu_names=gpus,
        is_android=android is not None,
        android_release=(android or {}).get("ro.build.version.release"),
        runtimes=_runtimes() if include_runtimes else [],
        power_sensors=describe_power_sensors(root, nvml),
        thermal_zones=read_thermal_zones(root),
    )
