"""Training data for the model-level predictors: one :class:`Sample` per (model, platform).

Two sources give the same samples:

* :func:`load_from_store` — the controller's measurements joined with the
  graph features of the model files in its blob store;
* :func:`load_csv` — measurements made elsewhere (the ``fleetmeter import``
  format, below), validated whole before anything is returned.

Targets (:data:`TARGETS`) and where a measurement record has them:

=================  ==================================  ====================================
target             store record                        CSV column
=================  ==================================  ====================================
``latency_ms``     ``latency_ms.median``               ``latency_ms`` (required, > 0)
``energy_mj``      ``energy_mj_per_inference``         ``energy_mj`` (optional, > 0)
``peak_rss_bytes`` ``peak_rss_bytes`` (0 = unknown)    ``peak_rss_bytes`` (optional, > 0)
=================  ==================================  ====================================

A target that was not measured (no power sensor, a failed run) is absent
from ``Sample.values``, never zero. Repeated measurements of one model on one
platform (several runs, several CSV rows) become one sample whose value is
the **median of the repeated values**; the repeats themselves stay in
``Sample.repeats`` for :func:`fleetmeter.modeler.metrics.noise_ceiling`.
Failed measurements (a ``failure_kind``) are left out: "cannot run here" is
not a cost. So are readings flagged ``disturbed`` (the machine was busy or
slow during every session, docs/measurement.md) and the drift canary's
``reference`` readings (a stability record, not a training sample).

Features are ``ModelFeatures.model`` of
:func:`fleetmeter.modeler.features.extract_features` (schema
:data:`~fleetmeter.modeler.features.FEATURE_SCHEMA_VERSION`), computed once
per (model sha256, input shapes) and process (:class:`FeatureCache`). A
store measurement is featurized at the input shapes its sweep gave the
runtime (the sweep's ``inputs`` overrides), so training sees the sizes the
models ran at, as ``predict --shape`` does; measurements of one model at
different shapes are different samples.

CSV import format (UTF-8, a header row, comma-separated)::

    model,platform,latency_ms,energy_mj,peak_rss_bytes,family
    models/mobilenet.onnx,pixel7-tflite-cpu4,12.5,,48234496,mobilenet

``model`` is the path of an ``.onnx`` or ``.tflite`` file, relative to the
CSV file's folder unless absolute; ``platform`` an id of at most 128
letters, digits and ``. _ : + @ = -`` (no ``/``, spaces or ``..``: the
controller refuses other names, :mod:`fleetmeter._names`);
``latency_ms`` a positive number; ``energy_mj``, ``peak_rss_bytes`` and
``family`` may be left empty or left out. Other columns are an error (a
misspelt ``latncy_ms`` must not vanish silently). So is a row that repeats
an earlier one exactly — same model content, platform and values: a pasted
line would count twice in a median; real repeats differ in their values.
:func:`read_csv` checks every row (numbers, extensions, that each model file
exists and parses) and raises one :class:`CsvImportError` listing each bad
line with its reason; :func:`load_csv` returns samples only for a file
without a single bad row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from fleetmeter._hashing import sha256_file
from fleetmeter.blobs import BlobStore
from fleetmeter._names import platform_name_problem
from fleetmeter.errors import InvalidArgument

__all__ = [
    "TARGETS",
    "CSV_REQUIRED_COLUMNS",
    "CSV_OPTIONAL_COLUMNS",
    "MODEL_EXTENSIONS",
    "Sample",
    "CsvRow",
    "CsvImportError",
    "FeatureCache",
    "load_from_store",
    "sweep_input_shapes",
    "read_csv",
    "load_csv",
    "samples_from_rows",
    "group_by_platform",
    "fingerprint",
]

log = logging.getLogger(__name__)

#: What the predictors learn, in target units (see the module docstring).
TARGETS = ("latency_ms", "energy_mj", "peak_rss_bytes")
CSV_REQUIRED_COLUMNS = ("model", "platform", "latency_ms")
CSV_OPTIONAL_COLUMNS = ("energy_mj", "peak_rss_bytes", "family")
MODEL_EXTENSIONS = {".onnx": "onnx", ".tflite": "tflite"}

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Sample:
    """One model on one platform: its measured targets and its graph features.

    ``values`` maps a target name to the median of its repeated measurements
    (targets not measured are absent); ``repeats`` maps it to those repeated
    values in the order they were measured; ``features`` is the flat model
    dict of :func:`~fleetmeter.modeler.features.extract_features`.
    """

    model_sha256: str
    family: str
    platform_id: str
    values: Mapping[str, float]
    features: Mapping[str, float] = field(repr=False)
    repeats: Mapping[str, Tuple[float, ...]] = field(default_factory=dict, repr=False)
    model_name: str = ""
    #: The input shapes the model ran at (``input_shapes_key`` form; ``()``: as the file declares them).
    input_shapes: Tuple[Tuple[str, Tuple[int, ...]], ...] = ()

    def value(self, target: str) -> Optional[float]:
        return self.values.get(target)


@dataclass(frozen=True)
class CsvRow:
    """One valid row of an import file (``line`` is its line number in the file)."""

    line: int
    model_path: Path
    model_sha256: str
    model_format: str
    platform_id: str
    family: str
    values: Mapping[str, float]


class CsvImportError(InvalidArgument):
    """A malformed import file; ``problems`` lists ``(line, reason)`` for every bad row."""

    def __init__(self, path: PathLike, problems: Sequence[Tuple[int, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  line {line}: {reason}" for line, reason in self.problems)
        super().__init__(f"{self.path}: {len(self.problems)} bad row(s), nothing imported:\n{lines}")


class FeatureCache:
    """Model features by (sha256, input shapes), computed once per process (the file's content and the
    input shapes fix them)."""

    def __init__(self) -> None:
        self._by_sha: Dict[Tuple[str, Any], Dict[str, float]] = {}

    def get(self, sha256: str, path: PathLike,
            input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, float]:
        """Features of the model ``sha256`` stored at ``path`` at ``input_shapes`` (read only on a miss).

        Raises :class:`~fleetmeter.errors.InvalidArgument` for a file that does
        not parse (or shapes it does not take), ``OSError`` for one that cannot be read.
        """
        from .features import input_shapes_key

        key = (sha256, input_shapes_key(input_shapes))
        cached = self._by_sha.get(key)
        if cached is None:
            from .features import extract_features

            cached = dict(extract_features(path, input_shapes=input_shapes).model)
            self._by_sha[key] = cached
        return cached

    def __len__(self) -> int:
        return len(self._by_sha)


_PROCESS_CACHE: Optional[FeatureCache] = None


def _default_cache() -> FeatureCache:
    global _PROCESS_CACHE
    if _PROCESS_CACHE is None:
        _PROCESS_CACHE = FeatureCache()
    return _PROCESS_CACHE


def usable_for_training(record: Mapping[str, Any]) -> bool:
    """The one rule for which stored readings train predictors (model- and kernel-level alike): not
    failed, not flagged ``disturbed``, not the drift canary's ``reference`` readings."""
    return not (record.get("failure_kind") or record.get("job_kind") == "reference"
                or "disturbed" in (record.get("flags") or ()))


def _check_targets(targets: Iterable[str]) -> Tuple[str, ...]:
    chosen = tuple(targets)
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown or not chosen:
        raise InvalidArgument(f"targets must be a non-empty subset of {', '.join(TARGETS)}; got {list(chosen)}")
    return chosen


def _positive(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _record_value(record: Mapping[str, Any], target: str) -> Optional[float]:
    """A target's value in one measurement record (``None`` where it was not measured)."""
    if target == "latency_ms":
        return _positive((record.get("latency_ms") or {}).get("median"))
    if target == "energy_mj":
        return _positive(record.get("energy_mj_per_inference"))
    return _positive(record.get("peak_rss_bytes"))  # 0 means the agent could not read it


def _aggregate(
    key: Tuple[str, str], repeats: Mapping[str, List[float]], family: str, features: Mapping[str, float], name: str,
    input_shapes: Tuple[Tuple[str, Tuple[int, ...]], ...] = (),
) -> Optional[Sample]:
    kept = {t: tuple(v) for t, v in repeats.items() if v}
    if not kept:
        return None
    values = {t: float(statistics.median(v)) for t, v in kept.items()}
    return Sample(model_sha256=key[0], family=family, platform_id=key[1], values=values, features=features,
                  repeats=kept, model_name=name, input_shapes=input_shapes)


def sweep_input_shapes(spec_inputs: Iterable[Mapping[str, Any]]) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    """The ``input_shapes_key`` of a sweep spec's ``inputs`` (``[{name, shape, fill}]``): the entries that set a
    shape (a fill alone changes no size)."""
    from .features import input_shapes_key

    return input_shapes_key({i["name"]: i["shape"] for i in spec_inputs or () if i.get("shape")})


def load_from_store(
    store: Any,
    blobs_root: PathLike,
    targets: Sequence[str] = TARGETS,
    *,
    platform_ids: Optional[Iterable[str]] = None,
    cache: Optional[FeatureCache] = None,
) -> List[Sample]:
    """Samples from the successful measurements in ``store`` (a controller ``Store``).

    ``blobs_root`` is the controller's blob folder (``<data_dir>/blobs``).
    Only measurements with at least one of ``targets`` count; ``platform_ids``
    restricts the platforms. A measurement's features are those at the input
    shapes of its sweep (``store.sweep_inputs()``: sweep id -> the spec's
    ``inputs``); one sample per (model, platform, input shapes). A model whose
    file is missing or does not parse (or does not take those shapes) is
    skipped with a warning in the log (its measurements stay in the store).
    Samples come sorted by platform, then model sha256, then input shapes.
    """
    chosen = _check_targets(targets)
    wanted = set(platform_ids) if platform_ids is not None else None
    cache = cache if cache is not None else _default_cache()
    models = {m["sha256"]: m for m in store.list_models()}
    shapes_of = {sweep_id: sweep_input_shapes(inputs) for sweep_id, inputs in store.sweep_inputs().items()}
    grouped: Dict[Tuple[str, str, Any], Dict[str, List[float]]] = {}
    for record in store.list_measurements(include_samples=False):
        if not usable_for_training(record):
            continue
        key = (record["model_sha256"], record["platform_id"], shapes_of.get(record.get("sweep_id") or "", ()))
        if wanted is not None and key[1] not in wanted:
            continue
        entry = grouped.setdefault(key, {t: [] for t in chosen})
        for target in chosen:
            value = _record_value(record, target)
            if value is not None:
                entry[target].append(value)

    blobs = BlobStore(blobs_root)
    samples: List[Sample] = []
    unusable: Dict[Tuple[str, Any], str] = {}
    for key in sorted(grouped, key=lambda k: (k[1], k[0], k[2])):
        sha, _, shapes = key
        if (sha, shapes) in unusable:
            continue
        try:
            features = cache.get(sha, blobs.path(sha), dict(shapes))
        except (OSError, ValueError) as exc:  # missing blob, corrupt model (InvalidArgument is a ValueError)
            unusable[(sha, shapes)] = str(exc)
            log.warning("skipping model %s%s: no usable model file (%s)", sha[:12],
                        f" at {dict(shapes)}" if shapes else "", exc)
            continue
        model = models.get(sha, {})
        sample = _aggregate(key[:2], grouped[key], (model.get("info") or {}).get("family", "") or "", features,
                            model.get("name", ""), shapes)
        if sample is not None:
            samples.append(sample)
    return samples


# --------------------------------------------------------------------- CSV


def _parse_number(text: str, column: str, *, required: bool) -> Tuple[Optional[float], Optional[str]]:
    """``(value, None)`` or ``(None, reason)``; an empty optional cell is ``(None, None)``."""
    text = text.strip()
    if not text:
        return None, (f"missing value for {column!r}" if required else None)
    try:
        value = float(text)
    except ValueError:
        return None, f"{column} is not a number: {text!r}"
    if not math.isfinite(value):
        return None, f"{column} is not a finite number: {text!r}"
    if value <= 0:
        return None, f"{column} must be positive, got {text}"
    return value, None


def read_csv(path: PathLike, *, cache: Optional[FeatureCache] = None) -> List[CsvRow]:
    """Every row of the import file at ``path``, validated (see the module docstring).

    Checks all rows before returning and raises :class:`CsvImportError`
    naming each bad line (header problems are reported as line 1), so a
    caller that writes rows to a store writes all of them or none.
    """
    cache = cache if cache is not None else _default_cache()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvImportError(path, [(1, f"not UTF-8 text ({exc})")]) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = _csv_columns(path, next(reader, None))
    problems: List[Tuple[int, str]] = []
    rows: List[CsvRow] = []
    shas: Dict[Path, str] = {}
    first_line: Dict[Tuple[str, str, Tuple[Tuple[str, float], ...]], int] = {}  # (sha, platform, values) → line
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line
        reasons: List[str] = []
        if len(cells) > len(columns):
            reasons.append(f"{len(cells)} fields, the header has {len(columns)}")
        row = {c: (cells[i] if i < len(cells) else "") for i, c in enumerate(columns)}
        platform = row["platform"].strip()
        if not platform:
            reasons.append("missing value for 'platform'")
        elif platform_name_problem(platform):
            reasons.append(f"platform {platform_name_problem(platform)}")
        values = _csv_values(row, reasons)
        model_path, sha, fmt = _csv_model(row["model"].strip(), path.parent, shas, cache, reasons)
        if not reasons:
            key = (sha, platform, tuple(sorted(values.items())))
            if key in first_line:
                reasons.append(f"duplicates line {first_line[key]} (same model, platform and values; "
                               "a repeated measurement differs in its values)")
            else:
                first_line[key] = line
        if reasons:
            problems.append((line, "; ".join(reasons)))
            continue
        assert model_path is not None
        rows.append(CsvRow(line=line, model_path=model_path, model_sha256=sha, model_format=fmt,
                           platform_id=platform, family=row.get("family", "").strip(), values=values))
    if problems:
        raise CsvImportError(path, problems)
    if not rows:
        raise CsvImportError(path, [(1, "no data rows after the header")])
    return rows


def _csv_columns(path: Path, header: Optional[List[str]]) -> List[str]:
    """The import file's column names; :class:`CsvImportError` (line 1) for a missing, unknown or doubled one."""
    if header is None:
        raise CsvImportError(path, [(1, "empty file: expected a header row "
                                         f"({', '.join(CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS)})")])
    columns = [h.strip() for h in header]
    problems: List[Tuple[int, str]] = []
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if missing:
        problems.append((1, f"missing required column(s): {', '.join(missing)}"))
    if unknown:
        problems.append((1, f"unknown column(s): {', '.join(unknown)} (known: "
                            f"{', '.join(CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS)})"))
    if duplicated:
        problems.append((1, f"duplicated column(s): {', '.join(duplicated)}"))
    if problems:
        raise CsvImportError(path, problems)
    return columns


def _csv_values(row: Mapping[str, str], reasons: List[str]) -> Dict[str, float]:
    """The row's measured targets (``latency_ms`` required); what is wrong with them goes to ``reasons``."""
    values: Dict[str, float] = {}
    for column in ("latency_ms", "energy_mj", "peak_rss_bytes"):
        if column not in row:
            continue
        value, reason = _parse_number(row[column], column, required=column == "latency_ms")
        if reason:
            reasons.append(reason)
        elif value is not None:
            values[column] = value
    return values


def _csv_model(model_text: str, base: Path, shas: Dict[Path, str], cache: FeatureCache, reasons: List[str]
               ) -> Tuple[Optional[Path], str, str]:
    """``(path, sha256, format)`` of the row's model file (relative to ``base``), its features parsed into
    ``cache``; what is wrong with it goes to ``reasons``. ``shas`` remembers files already hashed."""
    if not model_text:
        reasons.append("missing value for 'model'")
        return None, "", ""
    model_path = Path(model_text) if os.path.isabs(model_text) else base / model_text
    fmt = MODEL_EXTENSIONS.get(model_path.suffix.lower(), "")
    sha = ""
    if not fmt:
        reasons.append(f"unknown model extension {model_path.suffix or '(none)'!r} of {model_text!r} "
                       f"(expected {' or '.join(MODEL_EXTENSIONS)})")
    elif not model_path.is_file():
        reasons.append(f"model file not found: {model_text}")
    else:
        try:
            sha = shas.get(model_path) or sha256_file(model_path)
            shas[model_path] = sha
            cache.get(sha, model_path)
        except OSError as exc:
            reasons.append(f"model file unreadable: {model_text} ({exc.strerror or exc})")
        except ValueError as exc:  # InvalidArgument from the feature parsers
            reasons.append(f"corrupt or unsupported model {model_text}: {exc}")
    return model_path, sha, fmt


def samples_from_rows(rows: Iterable[CsvRow], *, cache: Optional[FeatureCache] = None) -> List[Sample]:
    """Rows grouped into samples per (model, platform): repeats aggregated by their median.

    A model's family is the first non-empty family given for it on any row.
    """
    cache = cache if cache is not None else _default_cache()
    grouped: Dict[Tuple[str, str], Dict[str, List[float]]] = {}
    family: Dict[str, str] = {}
    paths: Dict[str, Path] = {}
    for row in rows:
        entry = grouped.setdefault((row.model_sha256, row.platform_id), {t: [] for t in TARGETS})
        for target, value in row.values.items():
            entry[target].append(value)
        if row.family and not family.get(row.model_sha256):
            family[row.model_sha256] = row.family
        paths.setdefault(row.model_sha256, row.model_path)
    samples = []
    for key in sorted(grouped, key=lambda k: (k[1], k[0])):
        sha = key[0]
        sample = _aggregate(key, grouped[key], family.get(sha, ""), cache.get(sha, paths[sha]), paths[sha].stem)
        if sample is not None:
            samples.append(sample)
    return samples


def load_csv(path: PathLike, *, cache: Optional[FeatureCache] = None) -> List[Sample]:
    """Samples from an import file; :class:`CsvImportError` (nothing returned) if any row is bad."""
    return samples_from_rows(read_csv(path, cache=cache), cache=cache)


# --------------------------------------------------------------- helpers


def group_by_platform(samples: Iterable[Sample]) -> Dict[str, List[Sample]]:
    """``{platform_id: [samples]}``, platforms sorted, samples in their given order."""
    out: Dict[str, List[Sample]] = {}
    for s in samples:
        out.setdefault(s.platform_id, []).append(s)
    return dict(sorted(out.items()))


def fingerprint(samples: Iterable[Sample]) -> str:
    """Hex sha256 of the training data: sorted ``(model sha256, platform, target values)``.

    Independent of the samples' order; changes when a model, a platform or
    a measured value changes (values hashed exactly, as ``repr`` of the float).
    Features are not hashed: they follow from the model sha256, its input
    shapes (hashed when a sweep set them) and the feature schema version,
    which a manifest records separately.
    """
    items = sorted(
        (s.model_sha256, s.platform_id, sorted((t, repr(float(v))) for t, v in s.values.items()))
        + ((json.dumps(s.input_shapes),) if s.input_shapes else ()) for s in samples
    )
    return hashlib.sha256(json.dumps(items, separators=(",", ":")).encode("utf-8")).hexdigest()
