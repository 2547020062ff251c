"""Diagnostic for fidelity.py: what one timed call costs in the agent vs the bare runtime call.

    python benchmarks/_overhead_worker.py {onnxruntime,litert} MODEL [--rounds R] [--block-ms MS]

In ONE process, on one loaded model, alternates short timed blocks of:

* ``bare``        onnxruntime ``sess.run(None, feeds)`` / LiteRT ``interpreter.invoke()``
* ``set+invoke``  (LiteRT only) ``set_tensor`` of every input, then ``invoke()``
* ``agent``       what ``fleetmeter.agent.bench.run_benchmark`` hands its timed loop:
                  ``session.bind(feeds)`` where the session has ``bind`` (since commit
                  965f175), else ``lambda: session.run(feeds)`` (before it)

and prints the median over rounds of each block's median, in microseconds.
Same process, same session, same inputs: any difference is the harness.
"""
from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def main(argv=None) -> int:
    p = _common.model_worker_parser(__doc__)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--block-ms", type=float, default=5.0)
    args = p.parse_args(argv)

    from fleetmeter.agent.runtimes import get_runtime, make_inputs

    session = get_runtime(args.runtime).load(args.model, 1)
    feeds = make_inputs(session.inputs, None, None, 0)
    # Exactly what run_benchmark times (agent/bench.py), whichever version is installed.
    bind = getattr(session, "bind", None)
    agent_call = bind(feeds) if bind is not None else (lambda: session.run(feeds))
    variants = {"agent": agent_call}
    if args.runtime == "litert":
        interp = session._interp  # the agent's own interpreter: same delegate, same buffers
        index = {d["name"]: int(d["index"]) for d in interp.get_input_details()}
        for name, arr in feeds.items():
            interp.set_tensor(index[name], arr)
        invoke = interp.invoke
        items = [(index[n], a) for n, a in feeds.items()]
        set_tensor = interp.set_tensor

        def set_and_invoke():
            for i, a in items:
                set_tensor(i, a)
            invoke()

        variants = {"bare": invoke, "set+invoke": set_and_invoke, **variants}
    else:
        sess = session._session
        variants = {"bare": lambda: sess.run(None, feeds), **variants}

    clock = time.perf_counter
    for _ in range(5):
        for fn in variants.values():
            fn()
    t0 = clock()
    variants["bare"]()
    est_s = max(clock() - t0, 1e-6)
    n = max(5, min(2000, int(args.block_ms / 1000.0 / est_s)))

    def block(fn):
        out = []
        gc.disable()
        try:
            for _ in range(n):
                a = clock()
                fn()
                out.append(clock() - a)
        finally:
            gc.enable()
        return statistics.median(out) * 1e6

    per = {k: [] for k in variants}
    for r in range(args.rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in names:
            per[k].append(block(variants[k]))
    med = {k: statistics.median(v) for k, v in per.items()}
    out = {"runs_per_block": n, "rounds": args.rounds, "median_us": med, "agent_uses_bind": bind is not None,
           "agent_minus_bare_us": med["agent"] - med["bare"]}
    if "set+invoke" in med:
        out["set_tensor_effect_us"] = med["set+invoke"] - med["bare"]
        if bind is None:  # the agent's run(feeds) is set_tensor + invoke behind a Python wrapper
            out["python_wrapper_us"] = med["agent"] - med["set+invoke"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
