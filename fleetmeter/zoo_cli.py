"""``fleetmeter zoo``: list the zoo's families, build a zoo.

    fleetmeter zoo families [--json]
    fleetmeter zoo build --family mobilenetv2 --count 200 --seed 1 --formats onnx,tflite --out DIR
    fleetmeter zoo build --family all --count 10 --out DIR --no-ray
    fleetmeter zoo build --family all --count 10 --out DIR --ray-address HEAD:6379
    fleetmeter zoo build --family resnet --count 5 --formats tflite,tflite-int8 --out DIR
    fleetmeter zoo build --family nasbench201 --arch '|nor_conv_3x3~0|+|...|' --arch-index 9732 --out DIR

Formats: ``onnx``, ``tflite`` (float32) and ``tflite-int8`` (full-integer
post-training quantization: int8 weights per channel, int8 activations
calibrated on seeded inputs, float input/output; every family supports it;
see :mod:`fleetmeter.modeler.zoo.tflite_quant`).

:func:`add_zoo_commands` adds the ``zoo`` command to the ``fleetmeter``
parser's subparsers; each subcommand sets ``func(args) -> int`` like the
other commands. ``zoo build`` fans out over a local Ray (started and stopped
here, through :class:`fleetmeter.controller.engine.RayEngine`), or over the
cluster at ``--ray-address`` (the tasks send the files' bytes back and this
process writes them), unless ``--no-ray`` is given. This module is CLI (top layer): the zoo itself
(:func:`fleetmeter.modeler.zoo.build.build_zoo`) only takes an injected
``map_fn`` and never sees Ray or the controller.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

from fleetmeter.errors import FailedPrecondition

__all__ = ["add_zoo_commands", "cmd_zoo_families", "cmd_zoo_build"]


def add_zoo_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``zoo families`` and ``zoo build`` to ``subparsers``; return the ``zoo`` parser."""
    zoo = subparsers.add_parser(
        "zoo", help="generate model zoos from sampled architecture families",
        description="Sample CNN, transformer, segmentation and detection architectures from documented "
                    "hyper-parameter ranges and emit them as ONNX, float32 TFLite and int8-quantized TFLite "
                    "(same seed, same bytes).")
    sub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("families", help="list the families and their hyper-parameter ranges")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_zoo_families)

    p = sub.add_parser(
        "build", help="sample and write COUNT models per family",
        description="Write COUNT models of each family as FAMILY-NNNN.onnx / .tflite / .int8.tflite plus "
                    "index.json (name, family, hyper-parameters, format, quantization, sha256, size_bytes) into "
                    "--out. Model i of family f depends only on (--seed, f, i).")
    p.add_argument("--family", action="append", required=True, metavar="FAMILY",
                   help="a family name or 'all' (repeat, or separate with commas)")
    p.add_argument("--count", type=int, default=None,
                   help="models sampled per family (required unless --arch/--arch-index give the models)")
    p.add_argument("--arch", action="append", default=[], metavar="ARCH",
                   help="nasbench201 only: build this cell, given as a NAS-Bench-201 arch string (repeatable); "
                        "the file is nasbench201-archNNNNN with NNNNN its --arch-index")
    p.add_argument("--arch-index", action="append", type=int, default=[], metavar="I",
                   help="nasbench201 only: build the cell of fleetmeter's enumeration index I in [0, 15624] "
                        "(not the benchmark's own index; see `fleetmeter zoo families`) (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="zoo seed (default: %(default)s)")
    p.add_argument("--formats", default="onnx,tflite",
                   help="comma-separated: onnx, tflite, tflite-int8 (full-integer quantized TFLite, calibrated on "
                        "seeded inputs) (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--no-ray", action="store_true", help="build in this process instead of as Ray tasks")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="build on this Ray cluster (its workers send the files back; they are written here) "
                        "instead of a local Ray started for this command")
    p.add_argument("--json", action="store_true", help="print the index entries of the files written")
    p.set_defaults(func=cmd_zoo_build)
    return zoo


def cmd_zoo_families(args: argparse.Namespace) -> int:
    from fleetmeter.modeler.zoo.families import describe_families

    described = describe_families()
    if args.json:
        print(json.dumps(described, indent=2, sort_keys=True))
        return 0
    formats = sorted({f for info in described.values() for f in info["formats"]})
    print(f"formats (every family): {', '.join(formats)}; tflite-int8 is full-integer quantized TFLite\n")
    for name, info in described.items():
        print(f"{name}: {info['summary']}")
        print(f"  budget: <= {info['max_macs'] / 1e6:.0f} M MACs, <= {info['max_params'] / 1e6:.1f} M parameters")
        for key, spec in info["ranges"].items():
            if "choice" in spec:
                values = "{" + ", ".join(str(v) for v in spec["choice"]) + "}"
            elif "int" in spec:
                values = f"[{spec['int'][0]}, {spec['int'][1]}]"
            else:
                values = f"[{spec['uniform'][0]}, {spec['uniform'][1]}] step {spec['step']}"
            print(f"  {key:16s} {values:34s} {spec['help']}")
        print()
    return 0


def _family_names(values: List[str]) -> List[str]:
    from fleetmeter.modeler.zoo.families import get_family

    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    for name in names:
        if name != "all":
            try:
                get_family(name)
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None
    return names


def _pinned_archs(families: List[str], archs: List[str], indices: List[int]) -> list:
    """``(file stem, {"arch_index": i})`` for each ``--arch``/``--arch-index`` (nasbench201 only)."""
    if not archs and not indices:
        return []
    if families != ["nasbench201"]:
        raise ValueError("--arch / --arch-index name NAS-Bench-201 cells: use them with --family nasbench201 alone")
    from fleetmeter.modeler.zoo.fam_nasbench201 import arch_from_index, index_of_arch

    chosen = [index_of_arch(a) for a in archs] + [index_of_arch(arch_from_index(i)) for i in indices]
    return [(f"nasbench201-arch{i:05d}", {"arch_index": i}) for i in dict.fromkeys(chosen)]


def _ray_map(address: Optional[str] = None) -> tuple:
    """``(engine, map_fn)`` over Ray: a freshly started local Ray on loopback only (it serves this command alone:
    nothing of it needs to be reachable from another machine), or the cluster at ``address``.

    A task may run on another node, so it writes no file: it returns the files' bytes through Ray's object store
    and this process writes them (see :func:`_build_on_worker`)."""
    import asyncio

    from fleetmeter.controller.engine import RayEngine

    engine = RayEngine(address, node_ip="127.0.0.1" if address is None or _loopback(address) else None)
    try:
        engine.start()
    except ImportError as exc:
        raise FailedPrecondition("zoo build fans out as Ray tasks: pip install 'fleetmeter[zoo]', "
                                 "or pass --no-ray") from exc

    def map_fn(fn: Callable[[Any], Any], items: List[Any]) -> List[Any]:
        from fleetmeter.modeler.zoo._files import atomic_write
        from fleetmeter.modeler.zoo.build import build_model

        if fn is not build_model:
            return asyncio.run(engine.map(fn, items))
        results = []
        for task, (entries, files) in zip(items, asyncio.run(engine.map(_build_on_worker, items))):
            for name, data in files.items():
                atomic_write(Path(task.out_dir) / name, data)
            results.append(entries)
        return results

    return engine, map_fn


def _loopback(address: str) -> bool:
    from fleetmeter.controller.engine import is_loopback

    return is_loopback(address.rpartition(":")[0] or address)


def _build_on_worker(task: Any) -> tuple:
    """A Ray task: build one model in a private temp dir of the node it runs on and return ``(index entries,
    {file name: bytes})``; nothing stays on that node."""
    import dataclasses
    import tempfile

    from fleetmeter.modeler.zoo.build import build_model

    with tempfile.TemporaryDirectory(prefix="fm-zoo-") as tmp:
        entries = build_model(dataclasses.replace(task, out_dir=tmp))
        return entries, {e["file"]: (Path(tmp) / e["file"]).read_bytes() for e in entries}


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from fleetmeter._term import ProgressBar

    from fleetmeter.modeler.zoo.build import build_zoo, parse_formats

    families = _family_names(args.family)
    formats = parse_formats(args.formats)
    pinned = _pinned_archs(families, args.arch, args.arch_index)
    if args.count is None and not pinned:
        raise ValueError("--count is required (or give nasbench201 cells with --arch / --arch-index)")
    count = 0 if args.count is None else args.count
    if args.count is not None and count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    bar: Optional[ProgressBar] = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if args.json:
            return
        bar = bar or ProgressBar(total, stream=sys.stderr)  # the stream at call time, not at import
        bar.update(done, final=done == total)

    engine, map_fn = (None, None) if args.no_ray else _ray_map(args.ray_address)
    try:
        entries = build_zoo(families, count, args.seed, formats, args.out, progress=progress, map_fn=map_fn,
                            pinned=pinned)
    finally:
        if engine is not None:
            engine.shutdown()
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return 0
    by_family: dict = {}
    for e in entries:
        models, files, size = by_family.get(e["family"], (set(), 0, 0))
        models.add(e["name"])
        by_family[e["family"]] = (models, files + 1, size + e["size_bytes"])
    from fleetmeter._term import table

    print(table(["FAMILY", "MODELS", "FILES", "MB"],
                [(f, len(m), n, f"{s / 1e6:.1f}") for f, (m, n, s) in by_family.items()]))
    print(f"wrote {len(entries)} files and index.json to {args.out}", file=sys.stdout)
    return 0
