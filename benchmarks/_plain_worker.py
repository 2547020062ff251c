"""A *plain* timing loop, the reference that fidelity.py compares the agent with.

Deliberately imports nothing from fleetmeter: only numpy and the runtime.

    python benchmarks/_plain_worker.py {onnxruntime,litert} MODEL --runs N --warmup W [--seed S]

Protocol, mirroring what the agent does around its timed loop:
  * inputs: ``numpy.random.default_rng(seed)``, drawn in input order, floats
    ``rng.random(shape).astype(dtype)``, integers ``rng.integers(0, 10)``,
    dynamic dims set to 1 (the same recipe as fleetmeter's ``make_inputs``);
  * one first run, then ``W`` untimed warm-up runs;
  * ``gc.collect()``, then the garbage collector off for exactly ``N`` timed
    runs, each timed with ``time.perf_counter`` around the bare call:
    ``sess.run(None, feeds)`` (onnxruntime) or ``interpreter.invoke()``
    (LiteRT; inputs are set once, before the first run).

Prints one JSON object: median, mean, min, n, samples_ms.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time


def _inputs_like_fleetmeter(specs, seed):
    """``[(name, shape, dtype)]`` -> {name: array}, same recipe as fleetmeter's make_inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in specs:
        shape = tuple(1 if d is None else int(d) for d in shape)
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            feeds[name] = rng.random(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.random(shape) < 0.5
        else:
            feeds[name] = rng.integers(0, 10, size=shape).astype(dtype)
    return feeds


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
               "tensor(int64)": "int64", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def make_onnxruntime(model: str, threads: int, seed: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    specs = [(i.name, [d if isinstance(d, int) and d >= 0 else None for d in (i.shape or [])],
              _ORT_DTYPES[i.type]) for i in sess.get_inputs()]
    feeds = _inputs_like_fleetmeter(specs, seed)
    return sess.run, (None, feeds), ort.__version__, {k: list(v.shape) for k, v in feeds.items()}


def make_litert(model: str, threads: int, seed: int):
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=model, num_threads=threads)
    interp.allocate_tensors()
    details = interp.get_input_details()
    specs = []
    for d in details:
        sig = d.get("shape_signature")
        dims = sig if sig is not None and len(sig) else d["shape"]
        specs.append((d["name"], [int(x) if int(x) >= 0 else None for x in dims], d["dtype"]))
    feeds = _inputs_like_fleetmeter(specs, seed)
    for d in details:
        interp.set_tensor(d["index"], feeds[d["name"]])

    return interp.invoke, (), getattr(ai_edge_litert, "__version__", "unknown"), \
        {k: list(v.shape) for k, v in feeds.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runtime", choices=["onnxruntime", "litert"])
    p.add_argument("model")
    p.add_argument("--runs", type=int, required=True, help="timed runs")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    make = make_onnxruntime if args.runtime == "onnxruntime" else make_litert
    # call(*call_args) is the bare runtime call: sess.run(None, feeds) or interpreter.invoke().
    call, call_args, version, shapes = make(args.model, args.threads, args.seed)
    call(*call_args)  # first run (the agent times it separately; not a sample)
    for _ in range(args.warmup):
        call(*call_args)
    clock = time.perf_counter
    samples = []
    append = samples.append
    gc.collect()
    gc.disable()
    try:
        if call_args:  # onnxruntime: sess.run(None, feeds)
            out_names, feeds = call_args
            for _ in range(args.runs):
                t0 = clock()
                call(out_names, feeds)
                t1 = clock()
                append((t1 - t0) * 1000.0)
        else:  # LiteRT: interpreter.invoke()
            for _ in range(args.runs):
                t0 = clock()
                call()
                t1 = clock()
                append((t1 - t0) * 1000.0)
    finally:
        gc.enable()
    ordered = sorted(samples)
    n = len(ordered)
    mid = n // 2
    med = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    json.dump({"runtime": args.runtime, "runtime_version": version, "median": med,
               "mean": sum(samples) / n, "min": ordered[0], "n": n, "input_shapes": shapes,
               "cpu_affinity": affinity, "samples_ms": samples}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
