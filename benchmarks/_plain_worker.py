"""The plain side of fidelity.py: a bare timing loop, the reference the agent is compared with.

Deliberately imports nothing from fleetmeter: only numpy and the runtime.

    python benchmarks/_plain_worker.py {onnxruntime,litert} MODEL [--warmup W] [--seed S]

Serves blocks: reads one JSON line ``{"runs": N}`` from stdin per block and
answers one JSON line; EOF ends it. With ``--runs N`` it runs one block and
exits instead. Each block, mirroring what the agent does around its loop:

* a fresh session: ``onnxruntime.InferenceSession`` with intra-op threads 1,
  inter-op threads 1, sequential execution, CPU provider (graph
  optimisations at onnxruntime's default, ENABLE_ALL); or
  ``ai_edge_litert.interpreter.Interpreter(model_path, num_threads=1)``
  (default XNNPACK delegate) with ``allocate_tensors()``;
* inputs: ``numpy.random.default_rng(seed)``, drawn in input order, floats
  ``rng.random(shape).astype(dtype)``, integers ``rng.integers(0, 10)``,
  dynamic dims set to 1 (the same recipe as fleetmeter's ``make_inputs``);
  LiteRT inputs are ``set_tensor``'d once, before the first run;
* one first run, then W untimed warm-up runs;
* ``gc.collect()``, garbage collector off, then N timed runs, each timed with
  ``time.perf_counter()`` around the bare call: ``sess.run(None, feeds)`` or
  ``interpreter.invoke()``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
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


def _timed_block(call, args: tuple, runs: int, warmup: int) -> list:
    """``call(*args)`` once (not a sample: the agent times its first run separately), ``warmup`` times
    untimed, then ``runs`` times with the garbage collector off, each timed alone; the samples in ms."""
    call(*args)
    for _ in range(warmup):
        call(*args)
    clock = time.perf_counter
    samples = []
    append = samples.append
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            t0 = clock()
            call(*args)
            t1 = clock()
            append((t1 - t0) * 1000.0)
    finally:
        gc.enable()
    return samples


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
               "tensor(int64)": "int64", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def block_onnxruntime(model: str, runs: int, warmup: int, threads: int, seed: int):
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
    samples = _timed_block(sess.run, (None, feeds), runs, warmup)
    return samples, ort.__version__, {k: list(v.shape) for k, v in feeds.items()}


def block_litert(model: str, runs: int, warmup: int, threads: int, seed: int):
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
    samples = _timed_block(interp.invoke, (), runs, warmup)
    return samples, getattr(ai_edge_litert, "__version__", "unknown"), {k: list(v.shape) for k, v in feeds.items()}


def one_block(args, runs: int) -> dict:
    block = block_onnxruntime if args.runtime == "onnxruntime" else block_litert
    samples, version, shapes = block(args.model, runs, args.warmup, args.threads, args.seed)
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"median": statistics.median(samples), "mean": sum(samples) / len(samples), "min": min(samples),
            "n": len(samples), "runtime_version": version, "input_shapes": shapes, "cpu_affinity": affinity}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runtime", choices=["onnxruntime", "litert"])
    p.add_argument("model")
    p.add_argument("--runs", type=int, default=None, help="run one block of N timed runs and exit")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.runs is not None:
        print(json.dumps(one_block(args, args.runs)))
        return 0
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(one_block(args, int(json.loads(line)["runs"]))) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
