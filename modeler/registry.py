"""Versioned predictors on disk: LightGBM's text format plus a JSON manifest, no pickles.

Layout under the registry root::

    <root>/<platform dir>/<target>/v1/model.txt       LightGBM's own text format
                                   v1/manifest.json   everything else (below)
                                   v2/...
                                   pinned.json        optional: {"version": 1}

``<platform dir>`` is the platform id with every character outside
``[A-Za-z0-9._-]`` replaced by ``_``, plus ``-<8 hex of its sha256>`` when
anything was replaced (so ``a/b`` and ``a_b`` never share a folder); the
manifest keeps the real id, and :meth:`Registry.load` checks it.

Versions are ``1, 2, ...`` per (platform, target) and never rewritten: a
version is written into a hidden temporary folder and renamed into place,
so a reader sees all of it or nothing, and two writers racing for the same
number both succeed, one as the next number. Earlier versions are kept.
:meth:`Registry.load` returns the pinned version if :meth:`Registry.pin`
set one, else the latest; ``version=N`` loads that one.

``manifest.json`` (``MANIFEST_SCHEMA_VERSION`` 1)::

    manifest_schema_version, version, created_unix, platform_id, target,
    granularity ("model" | "kernel" | "transferred"), method (which candidate serves: lgbm,
    additive, additive_lgbm, opcount_lgbm, flops_linear, kernel or transfer), chosen_because (why it serves),
    feature_schema_version, training_fingerprint, n_samples, metrics,
    interval, library_versions {python, numpy, lightgbm, fleetmeter},
    work_fallback (WorkFallback.to_dict(): the work-based estimate serving
    falls back on for what the predictor never saw; null when trained
    without one), and
    model-level:  predictor (Predictor.config(): method, feature_set, columns,
                  prior {kind: loglog | additive | flops_linear, ...}, has_booster,
                  interval_log, interval_level, n_train, seed, params),
                  model_txt_sha256 (no model.txt when has_booster is false)
    kernel-level: kernel_predictor (KernelPredictor.config()),
                  kernel_files {kernel type: {file, sha256}}, and model_level {method, predictor,
                  model_txt_sha256}: the best model-level candidate (its booster in model.txt), kept
                  as a transfer's source (absent in versions written before it was kept)
    transferred:  as model-level (prior {kind: transfer, map, sources [{platform_id, predictor}]},
                  no booster), plus transfer {from_platforms, map, source_files [{file, sha256}]}: each
                  source's LightGBM text in sources/s000.txt ... ("" for a source without a booster), so
                  the version serves the same numbers whatever later happens to its sources
                  (see :mod:`~fleetmeter.modeler.transfer`)

A model-level prediction is ``exp(booster(columns) + prior)``, with the prior
``slope * log(1 + features[prior.feature]) + intercept`` (none for the
op-count baseline): ``model.txt`` alone is only the correction. A
kernel-level version (latency only) holds one LightGBM text per kernel type
in ``kernels/k000.txt ...`` instead (see :mod:`~fleetmeter.modeler.kernels`).

Errors: an unknown platform, target or version raises
:class:`~fleetmeter.errors.NotFound`; a predictor trained on another
feature schema than this fleetmeter extracts
(:data:`~fleetmeter.modeler.features.FEATURE_SCHEMA_VERSION`), a manifest of
an unknown format, or a ``model.txt`` whose hash does not match its manifest
raises :class:`~fleetmeter.errors.FailedPrecondition` saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform as _platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from fleetmeter.errors import FailedPrecondition, InvalidArgument, NotFound

from .dataset import TARGETS
from .features import FEATURE_SCHEMA_VERSION
from .methods import prior_from_dict
from .predictor import Predictor
from .train import TrainResult
from .transfer import LinearMap, TransferMap
from .work_fallback import WorkFallback

__all__ = ["MANIFEST_SCHEMA_VERSION", "Registry", "LoadedPredictor", "platform_dir_name", "library_versions", "json_safe"]

log = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1
MODEL_FILE = "model.txt"
MANIFEST_FILE = "manifest.json"
PIN_FILE = "pinned.json"
KERNEL_DIR = "kernels"
SOURCE_DIR = "sources"
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

PathLike = Union[str, "os.PathLike[str]"]


def platform_dir_name(platform_id: str) -> str:
    """The folder name of ``platform_id`` (see the module docstring)."""
    if not platform_id:
        raise InvalidArgument("platform id must not be empty")
    safe = _UNSAFE.sub("_", platform_id)
    if safe != platform_id or safe in (".", ".."):
        safe = f"{safe}-{hashlib.sha256(platform_id.encode('utf-8')).hexdigest()[:8]}"
    return safe


def library_versions() -> Dict[str, str]:
    """Versions of what wrote (or reads) a predictor."""
    import numpy

    out = {"python": _platform.python_version(), "numpy": numpy.__version__}
    try:
        import lightgbm

        out["lightgbm"] = lightgbm.__version__
    except ImportError:  # pragma: no cover - the modeler extra installs it
        out["lightgbm"] = ""
    try:
        from importlib.metadata import version

        out["fleetmeter"] = version("fleetmeter")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
        out["fleetmeter"] = ""
    return out


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


@dataclass
class LoadedPredictor:
    """A predictor read back from the registry, with its manifest."""

    predictor: Predictor
    manifest: Dict[str, Any]
    #: A model-level predictor trained on this platform's own readings: the serving one of a model-level
    #: version, the best model-level candidate kept in a kernel-level version (``None`` in kernel-level
    #: versions written before it was kept, and in transferred ones). A transfer's source.
    model_level: Optional[Predictor] = None

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def platform_id(self) -> str:
        return str(self.manifest["platform_id"])

    @property
    def work_fallback(self) -> Optional[WorkFallback]:
        """The work-based fallback trained with it (``None`` for versions written before there was one)."""
        data = self.manifest.get("work_fallback")
        try:
            return WorkFallback.from_dict(data) if data else None
        except (KeyError, TypeError, ValueError):
            log.warning("predictor %s v%s: unreadable work_fallback in its manifest; ignored",
                        self.manifest.get("platform_id"), self.manifest.get("version"))
            return None


def _model_parts(predictor: Predictor) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """The files and manifest fields of a model-level predictor's version (a transferred one: plus its
    sources' LightGBM texts, :func:`_transfer_parts`)."""
    model_text = predictor.model_text()
    files = {MODEL_FILE: model_text} if predictor.booster is not None else {}
    fields = {"granularity": "model", "method": predictor.method, "predictor": predictor.config(),
              "model_txt_sha256": hashlib.sha256(model_text.encode("utf-8")).hexdigest()}
    if hasattr(predictor.prior, "source_texts"):
        _transfer_parts(predictor.prior, files, fields)
    return files, fields


def _transfer_parts(base: Any, files: Dict[str, str], fields: Dict[str, Any]) -> None:
    """A transferred predictor's sources: ``sources/s000.txt ...`` (each source's booster) listed with their
    sha256 in ``transfer.source_files``; ``granularity`` ``"transferred"``, ``transfer.from_platforms``."""
    listing = []
    for i, text in enumerate(base.source_texts()):
        name = f"{SOURCE_DIR}/s{i:03d}.txt" if text else ""
        if text:
            files[name] = text
        listing.append({"file": name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest() if text else ""})
    fields["granularity"] = "transferred"
    fields["transfer"] = {"from_platforms": base.source_platforms, "map": base.map.method, "source_files": listing}


def _kernel_parts(predictor: Any) -> Tuple[Dict[str, str], Dict[str, Any]]:
    """The files and manifest fields of a kernel-level predictor's version."""
    files: Dict[str, str] = {}
    listing: Dict[str, Dict[str, str]] = {}
    for i, (kind, text) in enumerate(sorted(predictor.model_texts().items())):
        name = f"{KERNEL_DIR}/k{i:03d}.txt"
        files[name] = text
        listing[kind] = {"file": name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    return files, {"granularity": "kernel", "method": "kernel", "kernel_predictor": predictor.config(),
                   "kernel_files": listing}


class Registry:
    """Predictors under ``root`` (created on first save). Safe for concurrent writers on one file system."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------ paths
    def _target_dir(self, platform_id: str, target: str) -> Path:
        if target not in TARGETS:
            raise InvalidArgument(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        return self.root / platform_dir_name(platform_id) / target

    def version_dir(self, platform_id: str, target: str, version: int) -> Path:
        return self._target_dir(platform_id, target) / f"v{int(version)}"

    # ------------------------------------------------------------ writing
    def save(
        self,
        predictor: Any,
        *,
        platform_id: str,
        training_fingerprint: str,
        metrics: Optional[Mapping[str, Any]] = None,
        n_samples: Optional[int] = None,
        now: Optional[float] = None,
        chosen_because: str = "",
        model_level: Optional[Predictor] = None,
    ) -> int:
        """Write a trained ``predictor`` as the next version of (``platform_id``, its target); its version.

        A model-level :class:`~fleetmeter.modeler.predictor.Predictor` writes its booster as
        ``model.txt`` (when it has one); a :class:`~fleetmeter.modeler.kernels.KernelPredictor`
        (latency) one LightGBM text file per kernel type under ``kernels/`` (numbered: kernel types
        hold ``+`` and ``:``), listed with their sha256 in the manifest, and the ``model_level`` candidate
        given with it (``model.txt`` and ``model_level`` in the manifest: :attr:`LoadedPredictor.model_level`).
        """
        if isinstance(predictor, Predictor):
            target, (files, fields) = predictor.target, _model_parts(predictor)
        else:
            target, (files, fields) = "latency_ms", _kernel_parts(predictor)
            if model_level is not None:
                model_files, model_fields = _model_parts(model_level)
                files.update(model_files)
                fields["model_level"] = {k: model_fields[k] for k in ("method", "predictor", "model_txt_sha256")}
        return self._write(platform_id, target, files, {
            **fields,
            "chosen_because": chosen_because,
            "feature_schema_version": predictor.feature_schema_version,
            "n_samples": predictor.n_train if n_samples is None else int(n_samples),
        }, training_fingerprint, metrics, now)

    def _write(self, platform_id: str, target: str, files: Mapping[str, str], fields: Mapping[str, Any],
               training_fingerprint: str, metrics: Optional[Mapping[str, Any]], now: Optional[float]) -> int:
        target_dir = self._target_dir(platform_id, target)
        target_dir.mkdir(parents=True, exist_ok=True)
        metrics = dict(metrics or {})
        base_manifest: Dict[str, Any] = {
            "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
            "created_unix": time.time() if now is None else float(now),
            "platform_id": platform_id,
            "target": target,
            "training_fingerprint": training_fingerprint,
            "metrics": metrics,
            "interval": metrics.get("interval"),
            "library_versions": library_versions(),
            "work_fallback": (metrics.get("work_fallback") or {}).get("model"),
            **fields,
        }
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target_dir))
        try:
            for name, text in files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_text(text, encoding="utf-8")
            version = max((int(m.group(1)) for m in (_VERSION_DIR.match(e.name) for e in target_dir.iterdir())
                           if m), default=0) + 1
            while True:
                manifest = json_safe({**base_manifest, "version": version})
                (staging / MANIFEST_FILE).write_text(
                    json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
                try:
                    os.rename(staging, target_dir / f"v{version}")
                except OSError:
                    if (target_dir / f"v{version}").exists():
                        version += 1  # another writer took this number: take the next one
                        continue
                    raise
                log.info("saved %s-level predictor %s/%s v%d", fields["granularity"], platform_id, target, version)
                return version
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def save_result(self, result: TrainResult, *, now: Optional[float] = None) -> Optional[int]:
        """Save a :func:`~fleetmeter.modeler.train.train_all` result's serving predictor (``None`` if skipped)."""
        common = dict(platform_id=result.platform_id, training_fingerprint=result.fingerprint,
                      metrics=result.metrics, n_samples=result.n_samples, now=now,
                      chosen_because=result.chosen_because)
        if result.granularity == "kernel" and result.kernel_predictor is not None:
            return self.save(result.kernel_predictor, model_level=result.predictor, **common)
        if result.predictor is None:
            return None
        return self.save(result.predictor, **common)

    def pin(self, platform_id: str, target: str, version: int) -> None:
        """Make :meth:`load` without a version return ``version`` until :meth:`unpin`."""
        if int(version) not in self.list_versions(platform_id, target):
            raise NotFound(f"no predictor {platform_id}/{target} v{version}")
        path = self._target_dir(platform_id, target) / PIN_FILE
        tmp = path.with_name(PIN_FILE + ".tmp")
        tmp.write_text(json.dumps({"version": int(version)}) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def unpin(self, platform_id: str, target: str) -> None:
        (self._target_dir(platform_id, target) / PIN_FILE).unlink(missing_ok=True)

    def pinned(self, platform_id: str, target: str) -> Optional[int]:
        path = self._target_dir(platform_id, target) / PIN_FILE
        try:
            return int(json.loads(path.read_text(encoding="utf-8"))["version"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedPrecondition(f"{path} is not a valid pin file ({exc}); unpin and pin again") from exc

    # ------------------------------------------------------------ reading
    def list_versions(self, platform_id: str, target: str) -> List[int]:
        """Complete versions of (platform, target), ascending; ``[]`` when there is none."""
        target_dir = self._target_dir(platform_id, target)
        if not target_dir.is_dir():
            return []
        out = []
        for entry in target_dir.iterdir():
            match = _VERSION_DIR.match(entry.name)
            if match and (entry / MANIFEST_FILE).is_file():
                out.append(int(match.group(1)))
        return sorted(out)

    def list_predictors(self) -> List[Dict[str, Any]]:
        """``[{platform_id, target, versions, pinned}]`` for everything in the registry."""
        out = []
        if not self.root.is_dir():
            return out
        for platform_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for target in TARGETS:
                target_dir = platform_dir / target
                if not target_dir.is_dir():
                    continue
                versions = sorted(int(m.group(1)) for m in (_VERSION_DIR.match(e.name) for e in target_dir.iterdir())
                                  if m and (target_dir / m.group(0) / MANIFEST_FILE).is_file())
                if not versions:
                    continue
                manifest = self._read_manifest(target_dir / f"v{versions[-1]}")
                pid = str(manifest.get("platform_id", platform_dir.name))
                out.append({"platform_id": pid, "target": target, "versions": versions,
                            "pinned": self.pinned(pid, target)})
        return out

    def resolve_version(self, platform_id: str, target: str, version: Optional[int] = None) -> int:
        """``version`` if it exists, else the pinned one, else the latest; NotFound when none."""
        versions = self.list_versions(platform_id, target)
        if not versions:
            raise NotFound(f"no predictor for platform {platform_id!r} and target {target!r}")
        chosen = version if version is not None else self.pinned(platform_id, target) or versions[-1]
        if int(chosen) not in versions:
            raise NotFound(f"no predictor {platform_id}/{target} v{chosen} (versions: "
                           f"{', '.join(map(str, versions))})")
        return int(chosen)

    def manifest(self, platform_id: str, target: str, version: Optional[int] = None) -> Dict[str, Any]:
        """The manifest of a version (pinned or latest by default); no schema check."""
        chosen = self.resolve_version(platform_id, target, version)
        return self._read_manifest(self.version_dir(platform_id, target, chosen))

    @staticmethod
    def _read_manifest(version_dir: Path) -> Dict[str, Any]:
        path = version_dir / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise FailedPrecondition(f"{path}: unreadable manifest ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("manifest_schema_version") != MANIFEST_SCHEMA_VERSION:
            found = manifest.get("manifest_schema_version") if isinstance(manifest, dict) else None
            raise FailedPrecondition(f"{path}: manifest format {found!r}, this fleetmeter reads "
                                     f"{MANIFEST_SCHEMA_VERSION}: upgrade fleetmeter or retrain")
        return manifest

    def load(self, platform_id: str, target: str, version: Optional[int] = None) -> LoadedPredictor:
        """The predictor of (``platform_id``, ``target``): ``version``, else pinned, else latest.

        Raises :class:`~fleetmeter.errors.FailedPrecondition` when it was
        trained on another feature schema than this fleetmeter extracts.
        """
        chosen = self.resolve_version(platform_id, target, version)
        version_dir = self.version_dir(platform_id, target, chosen)
        manifest = self._read_manifest(version_dir)
        where = f"predictor {platform_id}/{target} v{chosen}"
        if manifest.get("platform_id") != platform_id or manifest.get("target") != target:
            raise FailedPrecondition(f"{where}: {version_dir} holds {manifest.get('platform_id')!r}/"
                                     f"{manifest.get('target')!r} instead")
        trained_on = manifest.get("feature_schema_version")
        if trained_on != FEATURE_SCHEMA_VERSION:
            raise FailedPrecondition(
                f"{where} was trained on feature schema {trained_on}, but this fleetmeter extracts feature "
                f"schema {FEATURE_SCHEMA_VERSION}: retrain it on current features (or pin a version trained on "
                f"schema {FEATURE_SCHEMA_VERSION})")
        granularity = manifest.get("granularity", "model")
        if granularity == "kernel":
            kept = manifest.get("model_level")
            model_level = self._load_model(version_dir, kept, target, where) if kept else None
            return LoadedPredictor(predictor=self._load_kernel(version_dir, manifest, where), manifest=manifest,
                                   model_level=model_level)
        predictor = self._load_model(version_dir, manifest, target, where)
        return LoadedPredictor(predictor=predictor, manifest=manifest,
                               model_level=predictor if granularity == "model" else None)

    @staticmethod
    def _load_model(version_dir: Path, fields: Mapping[str, Any], target: str, where: str) -> Predictor:
        """The model-level predictor that ``fields`` (a manifest, or its ``model_level``) describe."""
        config = fields["predictor"]
        model_text = None
        if config.get("has_booster", True):
            model_text = (version_dir / MODEL_FILE).read_text(encoding="utf-8")
            if hashlib.sha256(model_text.encode("utf-8")).hexdigest() != fields.get("model_txt_sha256"):
                raise FailedPrecondition(f"{where}: {MODEL_FILE} does not match its manifest (damaged?); retrain")
        prior = None
        if (config.get("prior") or {}).get("kind") == "transfer":
            prior = _load_transfer(version_dir, fields, config["prior"], where)
        predictor = _rebuild(config, model_text, target, where, prior)
        predictor.feature_schema_version = FEATURE_SCHEMA_VERSION  # load() checked the version's schema
        return predictor

    @staticmethod
    def _load_kernel(version_dir: Path, manifest: Mapping[str, Any], where: str) -> Any:
        from .kernels import KernelPredictor

        texts = {}
        for kind, entry in (manifest.get("kernel_files") or {}).items():
            text = (version_dir / entry["file"]).read_text(encoding="utf-8")
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != entry.get("sha256"):
                raise FailedPrecondition(f"{where}: {entry['file']} does not match its manifest (damaged?); retrain")
            texts[kind] = text
        try:
            return KernelPredictor.from_parts(manifest["kernel_predictor"], texts)
        except (KeyError, ValueError) as exc:
            raise FailedPrecondition(f"{where}: cannot rebuild the kernel-level predictor ({exc}); retrain") from exc


def _rebuild(config: Mapping[str, Any], model_text: Optional[str], target: str, where: str,
             prior: Any = None) -> Predictor:
    """A model-level :class:`Predictor` from its ``config`` (:meth:`Predictor.config`) and booster text
    (``None``: none); ``prior`` given (a transferred one's), else rebuilt from the config."""
    booster = None
    if model_text is not None:
        import lightgbm

        booster = lightgbm.Booster(model_str=model_text)
    if prior is None:
        try:
            prior = prior_from_dict(config["prior"]) if config.get("prior") else None
        except (KeyError, ValueError) as exc:
            raise FailedPrecondition(f"{where}: cannot rebuild its base model ({exc}); retrain") from exc
    return Predictor(
        target=target,
        feature_set=str(config["feature_set"]),
        columns=tuple(config["columns"]),
        booster=booster,
        prior=prior,
        interval_log=config.get("interval_log"),
        interval_level=float(config.get("interval_level", 0.9)),
        n_train=int(config.get("n_train", 0)),
        seed=int(config.get("seed", 0)),
        feature_schema_version=int(config.get("feature_schema_version", FEATURE_SCHEMA_VERSION)),
        params=dict(config.get("params") or {}),
        method=str(config.get("method", "lgbm")),
    )


def _load_transfer(version_dir: Path, manifest: Mapping[str, Any], data: Mapping[str, Any], where: str) -> Any:
    """A transferred predictor's base (:class:`~fleetmeter.modeler.transfer.TransferMap`): its sources
    rebuilt from the manifest and ``sources/`` (each file checked against its sha256)."""
    files = ((manifest.get("transfer") or {}).get("source_files")) or []
    entries = data.get("sources") or []
    if len(files) != len(entries):
        raise FailedPrecondition(f"{where}: {len(entries)} sources but {len(files)} source files listed; retrain")
    sources = []
    for entry, listed in zip(entries, files):
        text = None
        if listed.get("file"):
            text = (version_dir / listed["file"]).read_text(encoding="utf-8")
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != listed.get("sha256"):
                raise FailedPrecondition(f"{where}: {listed['file']} does not match its manifest (damaged?); "
                                         "adapt again")
        config = entry["predictor"]
        sources.append((str(entry["platform_id"]), _rebuild(config, text, str(config["target"]), where)))
    try:
        return TransferMap(target=str(data["target"]), sources=tuple(sources), map=LinearMap.from_dict(data["map"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FailedPrecondition(f"{where}: cannot rebuild its transfer map ({exc}); adapt again") from exc
