#!/usr/bin/env python
"""Prediction speed: batched predictions on cached features, and one gRPC ``Predict`` end to end.

The predictors are real LightGBM predictors of the production configuration
(300 rounds, 15 leaves, every model aggregate as a column, log-log prior),
trained on the features of 96 zoo models (all families) with *synthetic*
latencies (MACs- and bytes-based): this benchmark measures speed, so it
needs no measurement campaign; their accuracy is irrelevant here.

1. In process (``PredictorPool.predict_many``): predictions per second for
   batches of 10,000 cached feature dicts on one platform, and the time of
   one single-model prediction. Target: >= 10,000 predictions/s batched.
2. Over gRPC, against a real controller (local Ray; no agents) whose
   registry holds predictors for three platforms: ``Predict`` of a 100-node,
   2 MB ONNX model answered for all three platforms, by today's path (the
   file's bytes in every request) and by the client's sha-first path
   (``Client.predict``: the sha256 alone, then the graph without weights on
   ``ModelNotFound``), interleaved call by call. A *new model* is a different
   file every call (the same graph with a different metadata nonce), so
   every call pays the feature extraction; *the same model again* is one
   file asked for repeatedly (the server has its features). "Graph directly"
   sends the weightless graph without asking by sha256 first (the cost of
   the probe). Target (issue 9): p50 <= 10 ms for a new model.

    python benchmarks/predict_speed.py            # ~2 min (controller start included)
    python benchmarks/predict_speed.py --quick    # smoke run
"""
from __future__ import annotations

import argparse
import hashlib
import math
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "predict_speed"
PLATFORMS = ("bench-a/onnxruntime/t1", "bench-b/onnxruntime/t2", "bench-c/litert/t1")
BATCH = 10_000
TARGET_PER_S = 10_000
TARGET_P50_MS = 10.0


def _training_features(per_family: int) -> List[Any]:
    from fleetmeter.modeler.features import extract_features
    from fleetmeter.modeler.zoo.families import SMALL_FIXED, derive_seed, family_names, get_family
    from fleetmeter.modeler.zoo.onnx_emit import build_onnx, onnx_bytes

    out = []
    for family in family_names():
        for i in range(per_family):
            fixed = dict(SMALL_FIXED[family])
            arch = get_family(family).sample(derive_seed(3, family, i), name=f"{family}-{i}", **fixed)
            data = onnx_bytes(build_onnx(arch, seed=i))
            out.append((family, hashlib.sha256(data).hexdigest(), extract_features(data)))
    return out


def _registry(root: Path, feats: List[Any]) -> None:
    from fleetmeter.modeler.dataset import Sample
    from fleetmeter.modeler.registry import Registry
    from fleetmeter.modeler.methods import train_predictor

    reg = Registry(root)
    for k, platform in enumerate(PLATFORMS):
        samples = []
        for family, sha, f in feats:
            m = f.model
            ms = 0.01 + m["macs"] / (2e6 * (k + 1)) + (m.get("param_bytes", 0) + m.get("act_bytes", 0)) / 5e7
            samples.append(Sample(model_sha256=sha, family=family, platform_id=platform,
                                  values={"latency_ms": ms}, features=dict(m)))
        predictor = train_predictor(samples, "latency_ms", calibrate=True)
        reg.save(predictor, platform_id=platform, training_fingerprint="synthetic")


def _batched(root: Path, feats: List[Any], rounds: int) -> Dict[str, Any]:
    from fleetmeter.modeler.registry import Registry
    from fleetmeter.modeler.serving import PredictorPool

    pool = PredictorPool(Registry(root))
    dicts = [f.model for _, _, f in feats]
    batch = [dicts[i % len(dicts)] for i in range(BATCH)]
    pool.predict_many(batch[:10], PLATFORMS[0])  # load + warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        values, _, _ = pool.predict_many(batch, PLATFORMS[0])
        times.append(time.perf_counter() - start)
        assert len(values) == BATCH and all(v > 0 for v in values[:100])
    single = []
    for i in range(200):
        start = time.perf_counter()
        pool.predict(feats[i % len(feats)][2], [PLATFORMS[0]])
        single.append((time.perf_counter() - start) * 1e3)
    best = min(times)
    return {"batch": BATCH, "rounds": rounds, "median_s": round(_common.median(times), 4),
            "predictions_per_s_median": round(BATCH / _common.median(times)),
            "predictions_per_s_best": round(BATCH / best),
            "single_model_one_platform_ms_p50": round(_common.median(single), 3)}


def _nonce_copies(data: bytes, n: int) -> List[bytes]:
    import onnx

    model = onnx.load_from_string(data)
    out = []
    for i in range(n):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        entry = copy.metadata_props.add()
        entry.key, entry.value = "bench.nonce", str(i)
        out.append(copy.SerializeToString())
    return out


def _stats(v: List[float]) -> Dict[str, float]:
    return {"p50_ms": round(_common.median(v), 2), "p95_ms": round(_common.percentile(v, 95), 2),
            "p99_ms": round(_common.percentile(v, 99), 2), "min_ms": round(min(v), 2), "n": len(v)}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _grpc(tmp: Path, root_predictors: Path, calls: int) -> Dict[str, Any]:
    """Today's path (the file's bytes in every request) and the sha-first path side by side, interleaved call
    by call so that both see the same machine: for a new model (first call: every file is a different one)
    and for a model asked again."""
    import shutil

    from features_speed import _build, _node_count

    from fleetmeter.client import _Model, _base_request, predict_request
    from fleetmeter.local_fleet import LocalFleet

    model = _build("mobilenet", "onnx", 100)
    nodes = _node_count("onnx", model)
    copies = _nonce_copies(model, 3 * calls + 10)
    light_bytes = len(_Model(copies[0]).sent(_base_request("m", None, ("latency_ms",), None)).model_graph.onnx)
    fleet = LocalFleet(tmp / "fleet", api_token=secrets.token_hex(8), agent_token=secrets.token_hex(8))
    try:
        fleet.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root_predictors, fleet.data_dir / "predictors")
        fleet.start_controller()
        with fleet.client() as c:
            for data in copies[:5]:  # warm up: imports, predictor loading, both paths
                assert len(c.predict(data)) == len(PLATFORMS)
                assert len(c._pcall("Predict", predict_request(data, None)).predictions) == len(PLATFORMS)
            fresh = iter(copies[10:])
            new = {"bytes_every_call": [], "sha_first_then_graph": [], "graph_directly": []}
            features_ms = []

            def bytes_call() -> None:
                response = c._pcall("Predict", predict_request(next(fresh), None))
                assert len(response.predictions) == len(PLATFORMS) and response.features_ms > 0
                features_ms.append(response.features_ms)

            def graph_call() -> None:  # what the sha-first path sends second, without asking first
                m = _Model(next(fresh))
                request = m.sent(_base_request(m.name, None, ("latency_ms",), None))
                assert request.WhichOneof("model") == "model_graph"
                assert len(c._pcall("Predict", request).predictions) == len(PLATFORMS)

            for _ in range(calls):  # interleaved: the three see the same load
                new["bytes_every_call"].append(_timed(bytes_call))
                new["sha_first_then_graph"].append(_timed(lambda: c.predict(next(fresh))))
                new["graph_directly"].append(_timed(graph_call))
            again = {"bytes_every_call": [], "sha_first": []}
            for _ in range(calls):  # the same file again: features cached on the server either way
                again["bytes_every_call"].append(_timed(lambda: c._pcall("Predict", predict_request(copies[0], None))))
                again["sha_first"].append(_timed(lambda: c.predict(copies[0])))
            # PredictBatch, as a search loop uses it: an uploaded model by sha256, one stream, all platforms.
            path = tmp / "bench-model.onnx"
            path.write_bytes(copies[0])
            sha = c.upload_model(path).model.sha256
            from fleetmeter.v1 import predictor_pb2

            requests = [predictor_pb2.PredictRequest(model_sha256=sha, request_id=str(i)) for i in range(calls * 5)]
            start = time.perf_counter()
            answers = list(c._pstream("PredictBatch", iter(requests)))
            batch_s = time.perf_counter() - start
            assert len(answers) == len(requests) and not any(a.error for a in answers)
    finally:
        fleet.close()

    new_stats = {k: _stats(v) for k, v in new.items()}
    again_stats = {k: _stats(v) for k, v in again.items()}
    base_new, base_again = new_stats["bytes_every_call"]["p50_ms"], again_stats["bytes_every_call"]["p50_ms"]
    return {"model_nodes": nodes, "model_bytes": len(model), "graph_bytes": light_bytes,
            "platforms": len(PLATFORMS), "calls": calls,
            "new_model": new_stats, "same_model_again": again_stats,
            "p50_ratio_to_bytes_every_call": {
                "new_model_sha_first": round(new_stats["sha_first_then_graph"]["p50_ms"] / base_new, 3),
                "new_model_graph_directly": round(new_stats["graph_directly"]["p50_ms"] / base_new, 3),
                "same_model_sha_first": round(again_stats["sha_first"]["p50_ms"] / base_again, 3)},
            "predict_batch": {"requests": len(requests), "wall_s": round(batch_s, 3),
                              "requests_per_s": round(len(requests) / batch_s),
                              "predictions_per_s": round(len(requests) * len(PLATFORMS) / batch_s)},
            "server_feature_extraction_ms_p50": round(_common.median(features_ms), 2)}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run (few rounds and calls)")
    p.add_argument("--no-grpc", action="store_true", help="skip the controller part")
    _common.add_out_dir_argument(p)
    args = p.parse_args(argv)
    rounds, calls = (2, 20) if args.quick else (10, 300)
    with tempfile.TemporaryDirectory(prefix="fleetmeter-predict-speed-") as tmp:
        t0 = time.monotonic()
        feats = _training_features(2 if args.quick else 8)
        root = Path(tmp) / "predictors"
        _registry(root, feats)
        setup_s = time.monotonic() - t0
        batched = _batched(root, feats, rounds)
        grpc_part = None if args.no_grpc else _grpc(Path(tmp), root, calls)
    new_p50 = grpc_part["new_model"]["sha_first_then_graph"]["p50_ms"] if grpc_part else None
    again_p50 = grpc_part["same_model_again"]["sha_first"]["p50_ms"] if grpc_part else None
    payload = {"benchmark": NAME, "quick": args.quick, "machine": _common.machine_info(),
               "settings": {"training_models": len(feats), "platforms": list(PLATFORMS), "batch": BATCH,
                            "rounds": rounds, "calls": calls},
               "summary": {"batched_predictions_per_s": batched["predictions_per_s_median"],
                           "target_batched_per_s": TARGET_PER_S,
                           "grpc_new_model_p50_ms": new_p50, "grpc_same_model_p50_ms": again_p50,
                           "target_grpc_p50_ms": TARGET_P50_MS,
                           "new_model_within_target": new_p50 is not None and new_p50 <= TARGET_P50_MS,
                           "same_model_within_target": again_p50 is not None and again_p50 <= TARGET_P50_MS,
                           "batched_within_target": batched["predictions_per_s_median"] >= TARGET_PER_S},
               "setup_s": round(setup_s, 1), "batched": batched, "grpc_predict": grpc_part}
    path = _common.write_json(NAME, payload, args.out_dir)
    print(f"batched on cached features: {batched['predictions_per_s_median']:,} predictions/s (median of "
          f"{rounds} batches of {BATCH:,}; best {batched['predictions_per_s_best']:,}/s; target >= "
          f"{TARGET_PER_S:,}/s); one model, one platform in process: "
          f"{batched['single_model_one_platform_ms_p50']} ms")
    if grpc_part:
        g = grpc_part
        rows = [(f"new model: {label}", st["p50_ms"], st["p95_ms"], st["min_ms"]) for label, st in (
            ("bytes every call (today)", g["new_model"]["bytes_every_call"]),
            ("sha256 first, then graph", g["new_model"]["sha_first_then_graph"]),
            ("graph directly (no sha probe)", g["new_model"]["graph_directly"]))]
        rows += [(f"same model again: {label}", st["p50_ms"], st["p95_ms"], st["min_ms"]) for label, st in (
            ("bytes every call (today)", g["same_model_again"]["bytes_every_call"]),
            ("sha256 first (hit)", g["same_model_again"]["sha_first"]))]
        print(f"gRPC Predict, {g['model_nodes']}-node ONNX model ({g['model_bytes']:,} bytes; graph without "
              f"weights {g['graph_bytes']:,} bytes), {len(PLATFORMS)} platforms, {g['calls']} calls each "
              f"(target p50 <= {TARGET_P50_MS:g} ms):")
        print(_common.table(["PATH", "P50 MS", "P95 MS", "MIN MS"], rows))
        print(f"p50 ratios to bytes every call: {g['p50_ratio_to_bytes_every_call']}; server-side extraction "
              f"p50 {g['server_feature_extraction_ms_p50']} ms; PredictBatch (cached, by sha256) "
              f"{g['predict_batch']['requests_per_s']:,} requests/s = "
              f"{g['predict_batch']['predictions_per_s']:,} predictions/s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
