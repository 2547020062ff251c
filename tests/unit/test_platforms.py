"""Platform ids (controller/platforms.py): stable for the same platform, distinct for any difference, readable.

A platform id is what a predictor is trained for and what a pool of agents shares: two boards that are
not the same platform must never share an id (their measurements would be mixed), and the same board
must always get the same id (or its history splits).
"""
from __future__ import annotations

import pytest

from fleetmeter.controller.platforms import RUNTIME_FOR_FORMAT, hardware_summary, make_platform

HARDWARE = {"cpu_model": "AMD EPYC 7B13 Processor", "cores": 8, "arch": "x86_64", "memory_gib": 16}
OFFER = {"runtime": "onnxruntime", "runtime_version": "1.17.0", "provider": "default", "threads": 4}
LABELS = {"rack": "r1", "cooling": "fan"}


def pid(hardware=HARDWARE, offer=OFFER, labels=LABELS) -> str:
    return make_platform(dict(hardware), dict(offer), dict(labels))["platform_id"]


def test_same_hardware_runtime_threads_labels_give_the_same_id():
    """Fails if the id depends on anything but the platform (dict order, a fresh call): a board's history
    would split across ids after every restart."""
    reordered_hw = dict(reversed(list(HARDWARE.items())))
    reordered_labels = dict(reversed(list(LABELS.items())))
    assert pid() == pid() == pid(hardware=reordered_hw, labels=reordered_labels)


@pytest.mark.parametrize("change", [
    {"labels": {"rack": "r2", "cooling": "fan"}},
    {"labels": {"rack": "r1"}},
    {"offer": dict(OFFER, threads=2)},
    {"hardware": dict(HARDWARE, memory_gib=32)},
    {"hardware": dict(HARDWARE, cpu_model="AMD EPYC 7B12 Processor")},
    {"offer": dict(OFFER, runtime_version="1.18.0")},
    {"offer": dict(OFFER, provider="CUDAExecutionProvider")},
    {"offer": dict(OFFER, runtime="litert", runtime_version="1.17.0")},
], ids=["label-value", "label-missing", "threads", "memory", "cpu-model", "runtime-version", "provider",
        "runtime"])
def test_any_difference_gives_a_different_id(change):
    """Fails if two platforms that differ in labels, threads, memory, cpu, runtime or provider share an id
    (their measurements would be pooled and a predictor trained on a mix)."""
    assert pid(**change) != pid()


def test_delegates_with_a_long_common_path_get_different_ids():
    """Would fail (the bug this pins) if both delegate paths slug to 'delegate-usr-lib-aarch64' and nothing else in the
    id differs: two different LiteRT delegates on one board would form one pool."""
    vx = dict(OFFER, runtime="litert", provider="delegate:/usr/lib/aarch64-linux-gnu/libvx_delegate.so")
    ethos = dict(OFFER, runtime="litert", provider="delegate:/usr/lib/aarch64-linux-gnu/libethosu_delegate.so")
    assert pid(offer=vx) != pid(offer=ethos)


def test_ids_are_readable():
    """Fails if an id stops naming what it is: hardware, cores, runtime and version, provider, threads."""
    platform_id = pid()
    hw_part, runtime_part, provider_part, threads_part = platform_id.split("/")
    assert hw_part.startswith("amd-epyc-7b13-8c-")
    assert runtime_part == "onnxruntime-1.17.0"
    assert provider_part == "default"
    assert threads_part == "t4"
    litert = pid(offer=dict(OFFER, runtime="litert", runtime_version="1.2.0", provider="xnnpack", threads=1))
    assert "/litert-1.2.0/xnnpack/t1" in litert


def test_litert_cpu_provider_is_named_in_the_id():
    """Would fail (the bug this pins) if ``_slug('cpu')`` is 'unknown': the id hides which provider it measured."""
    assert "/cpu/" in pid(offer=dict(OFFER, runtime="litert", provider="cpu"))


def test_make_platform_row_and_validation():
    """Fails if the platform row loses fields the store/scheduler need, or accepts threads < 1."""
    row = make_platform(HARDWARE, dict(OFFER, provider=""), LABELS)
    assert row["provider"] == "default"  # empty provider means the runtime's default
    assert (row["runtime"], row["threads"], row["labels"], row["hardware_json"]) == (
        "onnxruntime", 4, LABELS, HARDWARE)
    assert row["hardware"] == hardware_summary(HARDWARE) == "AMD EPYC 7B13 Processor · 8 cores · x86_64 · 16 GiB"
    with pytest.raises(ValueError):
        make_platform(HARDWARE, dict(OFFER, threads=0), LABELS)
    assert RUNTIME_FOR_FORMAT == {"onnx": "onnxruntime", "tflite": "litert"}
