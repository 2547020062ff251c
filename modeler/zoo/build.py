"""Build a zoo: ``count`` sampled models per family, emitted as ONNX and/or TFLite.

Formats (:data:`FORMATS`): ``onnx`` (``NAME.onnx``), ``tflite`` (float32,
``NAME.tflite``) and ``tflite-int8`` (full-integer post-training quantized
TFLite with float input/output, ``NAME.int8.tflite``; see
:mod:`.tflite_quant`). Every index entry records ``quantization``:
``float32`` or ``int8``.

Determinism: model *i* of family *f* is sampled and given weights with
:func:`~.sampling.derive_seed` ``(seed, f, i)`` and nothing else, so the same
``(family, i, seed)`` gives byte-identical files whatever else is built,
in whatever order or on however many workers.

Fan-out: :func:`build_zoo` hands :class:`BuildTask` items to an injected
``map_fn(fn, items) -> list`` (serial by default; the CLI passes one backed
by Ray tasks). Workers write their files into ``out_dir`` themselves, so it
must be a folder they can reach (a local Ray, or a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._files import atomic_write
from .arch import GENERATOR_VERSION
from .families import derive_seed, get_family, resolve_families
from .formats import FILE_SUFFIX, FORMATS, QUANTIZATION, parse_formats  # noqa: F401 - re-exported

__all__ = ["FILE_SUFFIX", "FORMATS", "INDEX_FILE", "INDEX_SCHEMA_VERSION", "QUANTIZATION", "BuildTask", "build_model",
           "build_zoo", "model_name", "parse_formats"]

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_SCHEMA_VERSION = 1

MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], List[Any]]
ProgressFn = Callable[[int, int], None]


def model_name(family: str, index: int) -> str:
    """``mobilenetv2-0007``: the file stem of model ``index`` of ``family``."""
    return f"{family}-{index:04d}"


@dataclass(frozen=True)
class BuildTask:
    """One model to build (picklable, so it can travel to a Ray worker)."""

    family: str
    index: int
    seed: int
    formats: Tuple[str, ...]
    out_dir: str
    #: Hyper-parameters pinned for this model (e.g. NAS-Bench-201's ``arch_index``), and its file stem.
    fixed: Tuple[Tuple[str, Any], ...] = ()
    name: str = ""


def _emit(arch: Any, fmt: str, seed: int) -> bytes:
    if fmt == "onnx":
        from .onnx_emit import build_onnx, onnx_bytes

        return onnx_bytes(build_onnx(arch, seed=seed))
    if fmt == "tflite-int8":
        from .tflite_quant import build_tflite_int8

        return build_tflite_int8(arch, seed=seed)
    from .tflite_emit import build_tflite

    return build_tflite(arch, seed=seed)


def build_model(task: BuildTask) -> List[Dict[str, Any]]:
    """Sample, emit and write one model in each of ``task.formats``; one index entry per file."""
    from .onnx_emit import onnx_shape
    from .tflite_emit import tflite_shape

    model_seed = derive_seed(task.seed, task.family, task.index)
    name = task.name or model_name(task.family, task.index)
    arch = get_family(task.family).sample(model_seed, name=name, **dict(task.fixed))
    (inp,) = arch.input_layers
    entries = []
    for fmt in task.formats:
        data = _emit(arch, fmt, model_seed)
        file_name = name + FILE_SUFFIX[fmt]
        atomic_write(Path(task.out_dir) / file_name, data)
        shape = onnx_shape if fmt == "onnx" else tflite_shape
        entries.append({
            "name": name,
            "family": arch.family,
            "index": task.index,
            "format": fmt,
            "quantization": QUANTIZATION[fmt],
            "file": file_name,
            "hyperparameters": arch.hyperparameters,
            "zoo_seed": task.seed,
            "seed": model_seed,
            "input_name": inp.name,
            "input_shape": shape(inp.shape),
            "output_shape": shape(arch.shapes[arch.outputs[0]]),
            "param_count": arch.param_count(),
            "mac_count": arch.mac_count(),
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    return entries


def _serial_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> List[Any]:
    return [fn(item) for item in items]


def build_zoo(
    families: Union[str, Sequence[str]],
    count: int,
    seed: int,
    formats: Union[str, Sequence[str]],
    out_dir: Union[str, Path],
    *,
    progress: Optional[ProgressFn] = None,
    map_fn: Optional[MapFn] = None,
    chunk_size: Optional[int] = None,
    pinned: Sequence[Tuple[str, Mapping[str, Any]]] = (),
) -> List[Dict[str, Any]]:
    """Build ``count`` models of each family (``"all"`` for every family) into ``out_dir``.

    ``pinned`` adds given models: ``(file stem, hyper-parameters to pin)``
    pairs, each built for every family in ``families`` (e.g.
    ``("nasbench201-arch09732", {"arch_index": 9732})``); their index is
    ``count`` onwards.

    Returns the index entries of the files written (family order, then
    index, then format) and merges them into ``out_dir/index.json``: entries
    of files not rebuilt now are kept while their file exists, so families
    can be built into one folder one at a time. ``progress(done, total)``
    is called after each chunk of ``chunk_size`` models (default: 1 when
    serial, 32 with a ``map_fn``) has been handed back by ``map_fn``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    names = [families] if isinstance(families, str) else list(families)
    chosen = resolve_families(names)
    fmts = parse_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [BuildTask(f.name, i, int(seed), fmts, str(out)) for f in chosen for i in range(count)]
    tasks += [BuildTask(f.name, count + k, int(seed), fmts, str(out), tuple(sorted(dict(fixed).items())), stem)
              for f in chosen for k, (stem, fixed) in enumerate(pinned)]
    run = map_fn or _serial_map
    step = chunk_size or (1 if map_fn is None else 32)
    entries: List[Dict[str, Any]] = []
    if progress:
        progress(0, len(tasks))
    for start in range(0, len(tasks), step):
        for result in run(build_model, tasks[start:start + step]):
            entries.extend(result)
        if progress:
            progress(min(start + step, len(tasks)), len(tasks))
    _write_index(out, entries)
    log.info("built %d files of %d models into %s", len(entries), len(tasks), out)
    return entries


def _write_index(out: Path, entries: List[Dict[str, Any]]) -> None:
    path = out / INDEX_FILE
    merged: Dict[str, Dict[str, Any]] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8")).get("models", [])
        except (ValueError, AttributeError):
            log.warning("ignoring unreadable %s", path)
            previous = []
        merged = {e["file"]: e for e in previous if isinstance(e, dict) and (out / str(e.get("file"))).is_file()}
    merged.update({e["file"]: e for e in entries})
    index = {"schema_version": INDEX_SCHEMA_VERSION, "generator_version": GENERATOR_VERSION,
             "models": [merged[k] for k in sorted(merged)]}
    atomic_write(path, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8"))
