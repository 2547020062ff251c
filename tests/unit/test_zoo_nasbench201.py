"""The ``nasbench201`` zoo family: NAS-Bench-201's CIFAR network, checked by hand."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fleetmeter.modeler.features import extract_features  # noqa: E402
from fleetmeter.modeler.zoo.arch import ArchitectureError  # noqa: E402
from fleetmeter.modeler.zoo.build import build_zoo  # noqa: E402
from fleetmeter.modeler.zoo.fam_nasbench201 import (  # noqa: E402
    NUM_ARCHS,
    arch_from_index,
    build_nasbench201,
    format_arch,
    index_of_arch,
    parse_arch,
)
from fleetmeter.modeler.zoo.families import get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402
from fleetmeter.modeler.zoo.tflite_emit import build_tflite  # noqa: E402
from _support import ort_session, run_zoo_cli  # noqa: E402

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
NO_PARAMS = "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
MIXED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _hand_macs_all_conv3() -> int:
    """Conv and dense MACs of the all-3x3 cell, written out layer by layer."""
    stem = 32 * 32 * 16 * 3 * 9
    cells = sum(30 * s * s * c * c * 9 for s, c in ((32, 16), (16, 32), (8, 64)))  # 6 edges x 5 cells a stage
    reductions = sum(s * s * c * (c // 2) * 9 + s * s * c * c * 9 + s * s * c * (c // 2)
                     for s, c in ((16, 32), (8, 64)))
    return stem + cells + reductions + 64 * 10


def test_the_all_conv3x3_network_matches_the_hand_count_and_the_published_220m_flops():
    arch = build_nasbench201("nb", {"arch": ALL_CONV3})
    assert arch.mac_count() == _hand_macs_all_conv3() == 220_119_680  # NB201's largest: 220.11 M
    # The smallest cell (no convolution on any edge) is NB201's published minimum, 7.78 M.
    assert build_nasbench201("nb", {"arch": NO_PARAMS}).mac_count() == 7_783_040
    model = build_onnx(arch)
    ops = [n.op_type for n in model.graph.node]
    # A cell: 6 edges x (Relu + Conv) + 3 adds; 15 cells; stem conv; two reduction blocks of 7
    # (Relu Conv Relu Conv AveragePool Conv Add); BN + Relu; GlobalAveragePool + Flatten; Gemm.
    assert len(ops) == 15 * 15 + 1 + 2 * 7 + 2 + 2 + 1 == 245
    assert ops.count("Conv") == 15 * 6 + 1 + 2 * 3
    features = extract_features(onnx_bytes(model)).model
    # The features add one MAC per output element of an activation fused into a conv (the convention of
    # fleetmeter.modeler.features): the reduction blocks' first ReLU.
    fused = sum(s * s * c for s, c in ((16, 32), (8, 64)))
    assert features["macs:conv2d"] + features["macs:dense"] - arch.mac_count() in (0, fused)


def test_every_edge_is_computed_none_as_a_multiply_by_zero_skip_as_no_op():
    arch = build_nasbench201("nb", {"arch": NO_PARAMS})
    ops = [n.op_type for n in build_onnx(arch).graph.node]
    # Per cell: 2 none edges (Mul by 0), 2 pools, 2 skips (nothing), 3 adds.
    assert ops.count("Mul") == 2 * 15 and ops.count("AveragePool") == 2 * 15 + 2
    assert ops.count("Add") == 3 * 15 + 2
    # A cell disconnected from its input still builds (its output is a computed zero) and runs.
    disconnected = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    sess = ort_session(onnx_bytes(build_onnx(build_nasbench201("nb", {"arch": disconnected}))))
    (out,) = sess.run(None, {sess.get_inputs()[0].name: np.ones((1, 3, 32, 32), np.float32)})
    assert out.shape == (1, 10)


def test_arch_strings_and_indices_round_trip_for_all_15625_cells():
    seen = set()
    for index in range(NUM_ARCHS):
        arch = arch_from_index(index)
        assert index_of_arch(arch) == index and format_arch(parse_arch(arch)) == arch
        seen.add(arch)
    assert len(seen) == NUM_ARCHS == 15_625
    assert parse_arch(MIXED) == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3",
                                 "skip_connect")


@pytest.mark.parametrize("bad, message", [
    ("|nor_conv_3x3~0|", "3 nodes"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read node 0"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "2 incoming edge"),
])
def test_malformed_arch_strings_are_named(bad, message):
    with pytest.raises(ArchitectureError, match=message):
        parse_arch(bad)
    with pytest.raises(ArchitectureError):
        arch_from_index(NUM_ARCHS)


def test_builds_are_deterministic_and_record_the_arch_in_metadata():
    family = get_family("nasbench201")
    a, b = family.sample(11), family.sample(11)
    assert a == b and a.hyperparameters["arch"] == arch_from_index(a.hyperparameters["arch_index"])
    first, second = onnx_bytes(build_onnx(a, seed=3)), onnx_bytes(build_onnx(b, seed=3))
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert build_tflite(a, seed=3) == build_tflite(b, seed=3)
    meta = {p.key: p.value for p in onnx.load_from_string(first).metadata_props}
    assert json.loads(meta["fleetmeter.hyperparameters"])["arch"] == a.hyperparameters["arch"]
    assert family.build("x", a.hyperparameters).layers == a.layers  # rebuilt from its metadata


def test_onnx_and_tflite_agree_on_the_work(tmp_path):
    arch = build_nasbench201("nb", {"arch": MIXED})
    o = extract_features(onnx_bytes(build_onnx(arch))).model
    t = extract_features(build_tflite(arch)).model
    for key in ("macs:conv2d", "count:conv2d", "count:pool_avg", "macs:pool_avg", "macs:dense"):
        assert o[key] == t[key], key


def test_zoo_build_addresses_cells_by_arch_string_and_index(tmp_path, capsys):
    assert run_zoo_cli(["zoo", "build", "--family", "nasbench201", "--arch", MIXED, "--arch-index", "7",
                        "--formats", "onnx", "--out", str(tmp_path), "--no-ray", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    by_name = {e["name"]: e for e in entries}
    assert set(by_name) == {f"nasbench201-arch{index_of_arch(MIXED):05d}", "nasbench201-arch00007"}
    assert by_name["nasbench201-arch00007"]["hyperparameters"]["arch"] == arch_from_index(7)
    with pytest.raises(ValueError, match="nasbench201 alone"):
        run_zoo_cli(["zoo", "build", "--family", "resnet", "--arch-index", "1", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--count is required"):
        run_zoo_cli(["zoo", "build", "--family", "nasbench201", "--out", str(tmp_path)])
    sampled = build_zoo("nasbench201", 2, 0, "onnx", tmp_path / "s")
    assert [e["name"] for e in sampled] == ["nasbench201-0000", "nasbench201-0001"]
