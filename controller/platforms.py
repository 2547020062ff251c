"""What a platform is, and how its id is derived.

A platform is what a predictor is trained for: hardware identity + runtime +
runtime version + provider/delegate + threads (+ operator labels). Agents
that derive the same platform form a pool; a job for a platform goes to any
free agent of its pool.

Ids are readable and stable: ``<hardware-slug>-<hash6>/<runtime>-<version>/<provider>/t<threads>``,
where the hash covers the full hardware identity, the labels and the full
provider name, so two boards that differ only in memory or labels (or two
delegates whose names share a long prefix) never share an id.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Mapping

# Which runtime runs which model format.
RUNTIME_FOR_FORMAT = {"onnx": "onnxruntime", "tflite": "litert"}


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")[:limit].strip("-.") or "unknown"


def _cpu_slug(text: str) -> str:
    """A CPU model without the noise words ("(R)", "CPU", "@ 2.20GHz", "Processor")."""
    return _slug(re.sub(r"\(r\)|\(tm\)|\bcpu\b|@.*$|\bprocessor\b|\bcore\b", " ", text.lower()))


def hardware_summary(hardware: Mapping) -> str:
    """A short human line: ``AMD EPYC 7B13 · 2 cores · x86_64 · 8 GiB``."""
    parts = [str(hardware.get("device_model") or hardware.get("cpu_model") or "unknown cpu")]
    cores = hardware.get("cpu_cores_logical") or hardware.get("cores")
    if cores:
        parts.append(f"{cores} cores")
    if hardware.get("arch"):
        parts.append(str(hardware["arch"]))
    if hardware.get("memory_gib"):
        parts.append(f"{hardware['memory_gib']} GiB")
    gpus = hardware.get("gpus") or hardware.get("gpu")
    if gpus:
        parts.append(", ".join(gpus) if isinstance(gpus, list) else str(gpus))
    return " · ".join(parts)


def platform_id(hardware: Mapping, runtime: str, runtime_version: str, provider: str, threads: int,
                labels: Mapping[str, str]) -> str:
    canonical = json.dumps({"hardware": hardware, "labels": dict(labels), "provider": provider},
                           sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:6]
    name = hardware.get("device_model") or hardware.get("cpu_model") or "unknown"
    n = hardware.get("cpu_cores_logical") or hardware.get("cores")
    cores = f"-{n}c" if n else ""
    return (f"{_cpu_slug(str(name))}{cores}-{digest}/{runtime}-{runtime_version}/"
            f"{_slug(provider or 'default', 24)}/t{threads}")


def make_platform(hardware: Mapping, offer: Mapping, labels: Mapping[str, str]) -> dict:
    """The platform row for one of an agent's offers (runtime, runtime_version, provider, threads)."""
    threads = int(offer.get("threads") or 0)
    if threads < 1:
        raise ValueError(f"an offer needs threads >= 1, got {offer!r}")
    provider = offer.get("provider") or "default"
    return {
        "platform_id": platform_id(hardware, offer["runtime"], offer["runtime_version"], provider, threads, labels),
        "hardware": hardware_summary(hardware),
        "hardware_json": dict(hardware),
        "runtime": offer["runtime"],
        "runtime_version": offer["runtime_version"],
        "provider": provider,
        "threads": threads,
        "labels": dict(labels),
    }
