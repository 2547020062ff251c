"""Kernel-level predictors on real onnxruntime profiles of zoo models (fleetmeter.modeler.kernels).

Builds two small models of every zoo family, profiles them for real with
:func:`fleetmeter.agent.profile.profile_operators` and times them with
onnxruntime, then goes through the same matching code the store loader uses.
About 10 s on one core.
"""
from __future__ import annotations

import hashlib
import statistics
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("lightgbm")

from fleetmeter.agent.profile import profile_operators  # noqa: E402
from fleetmeter.agent.runtimes import OnnxRuntime, make_inputs  # noqa: E402
from fleetmeter.modeler.features import extract_features  # noqa: E402
from fleetmeter.modeler.kernel_match import kernel_sample_from_profile, match_profile  # noqa: E402
from fleetmeter.modeler.kernels import KernelPredictor, train_kernel_predictor  # noqa: E402
from fleetmeter.modeler.metrics import spearman  # noqa: E402
from fleetmeter.modeler.zoo.families import SMALL_FIXED, derive_seed, family_names, get_family  # noqa: E402
from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes  # noqa: E402

pytestmark = pytest.mark.integration

INPUT_SIZES = (32, 64)


def _latency_ms(path: str, runs: int = 15) -> float:
    session = OnnxRuntime().load(path, 1)
    try:
        feeds = make_inputs(session.inputs, {}, {}, 0)
        for _ in range(3):
            session.run(feeds)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(feeds)
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        session.close()
    return float(statistics.median(times))


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """``[(family, ModelFeatures, operators, latency_ms, sha256)]`` for two models of each family."""
    root = tmp_path_factory.mktemp("kernel-zoo")
    out = []
    for family in family_names():
        for index, size in enumerate(INPUT_SIZES):
            fixed = dict(SMALL_FIXED[family])
            for key in ("input_size", "base_resolution"):
                if key in fixed:
                    fixed[key] = size
            arch = get_family(family).sample(derive_seed(7, family, index), name=f"{family}-{index}", **fixed)
            data = onnx_bytes(build_onnx(arch, seed=index))
            sha = hashlib.sha256(data).hexdigest()
            path = root / f"{family}-{index}.onnx"
            path.write_bytes(data)
            operators = profile_operators(str(path), threads=1, runs=5, warmup_runs=1)
            out.append((family, extract_features(path), operators, _latency_ms(str(path)), sha))
    return out


#: Profile nodes that move or re-lay data (ORT's NCHWc copies, reshapes): a neighbour may carry their time.
DATA_MOVEMENT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Reshape", "Transpose", "Flatten", "Squeeze",
                               "Unsqueeze", "Identity", "Expand"})


def test_profiled_time_lands_on_our_kernels(profiled):
    """Fails if onnxruntime's renamed, fused or invented nodes are not mapped back onto our kernels.

    Asserted on what the match decides per profile node, which is the same on every run of one onnxruntime
    version, not on the profiled times, which move with the machine's load: every family's profile nodes
    must almost all reach a kernel (all of them with onnxruntime 1.32), the kernel times must add up to
    exactly the matched time, and nine in ten kernels must get a time. Attaching to a neighbour places
    anything, so the compute nodes (all but data movement) must be resolved by name or shape, not attached:
    over 90 % per model, over 95 % over all models (with onnxruntime 1.32 all but the HardSigmoid and Mul
    that ORT decomposes a HardSwish after a Gemm into: 2 of the ~80 compute nodes of a MobileNetV3).

    The share of profiled *time* resolved by name or shape (87-88 % over all models here, 73-100 % per
    model; 89.3 % and 89.4 % once failed a 90 % bar on a loaded 2-core VM) is printed for the record; it
    is only bounded where noise cannot reach: the data movement nodes taking more time than all the
    resolved compute together would mean the profile or the match is broken, not the machine busy.
    """
    resolved_ms = profiled_ms = 0.0
    compute_nodes = compute_resolved = 0
    for family, features, operators, _, _ in profiled:
        assert operators, f"{family}: onnxruntime returned no profile"
        match = match_profile(features, operators)
        assert len(match.resolution) == len(operators), family
        placed = sum(1 for how in match.resolution if how)
        assert placed >= 0.9 * len(operators), (family, placed, len(operators), match.unmatched)
        timed = [t for t in match.kernel_times_ms if t is not None]
        assert sum(timed) == pytest.approx(match.matched_ms, rel=1e-9), family
        assert len(timed) >= 0.9 * len(features.kernels), (family, len(timed), len(features.kernels))
        compute = [how for op, how in zip(operators, match.resolution) if op.get("op_type") not in DATA_MOVEMENT_OPS]
        by_name_or_shape = sum(1 for how in compute if how in ("name", "shape"))
        assert by_name_or_shape > 0.9 * len(compute), (
            family, [(op.get("node_name"), op.get("op_type")) for op, how in zip(operators, match.resolution)
                     if op.get("op_type") not in DATA_MOVEMENT_OPS and how not in ("name", "shape")])
        compute_nodes += len(compute)
        compute_resolved += by_name_or_shape
        resolved_ms += match.resolved_ms
        profiled_ms += match.profiled_ms
        print(f"{family}: {by_name_or_shape}/{len(compute)} compute nodes by name or shape; "
              f"{match.resolved_ms / match.profiled_ms:.1%} of the profiled time resolved")
    print(f"all models: {compute_resolved}/{compute_nodes} compute nodes by name or shape; "
          f"{resolved_ms / profiled_ms:.1%} of the profiled time resolved")
    assert compute_resolved > 0.95 * compute_nodes, (compute_resolved, compute_nodes)
    assert resolved_ms > 0.5 * profiled_ms, resolved_ms / profiled_ms


def test_kernel_predictor_trains_and_round_trips_on_real_profiles(profiled):
    """Fails if real samples cannot be learned from (order of the models, scale) or the round trip changes them."""
    samples = [kernel_sample_from_profile(f, ops, lat, model_sha256=sha, family=fam, platform_id="local")
               for fam, f, ops, lat, sha in profiled]
    assert statistics.median(s.profiled_ms / s.latency_ms for s in samples) > 0.3  # the profile sees most of the time
    predictor = train_kernel_predictor(samples, seed=0, calibrate=False)
    features = [f for _, f, _, _, _ in profiled]
    pred = predictor.predict(features)
    true = np.asarray([s.latency_ms for s in samples])
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    assert spearman(pred, true) > 0.8
    assert float(np.median(np.abs(pred / true - 1))) < 0.3
    assert np.array_equal(predictor.predict(samples), pred)  # a sample's stored kernels are the file's kernels
    again = KernelPredictor.from_parts(predictor.config(), predictor.model_texts())
    assert np.array_equal(again.predict(features), pred)
