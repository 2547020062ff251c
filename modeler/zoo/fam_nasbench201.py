"""NAS-Bench-201 as a zoo family: the benchmark's CIFAR network for any of its 15,625 cells.

The network (Dong & Yang, ICLR 2020; what the public NB201 latency tables measure)::

    input 32x32x3 -> 3x3 conv (C) + BN
    -> 5 cells (C) -> reduction block (2C) -> 5 cells (2C) -> reduction block (4C) -> 5 cells (4C)
    -> BN + ReLU -> global average pool -> dense (classes)

with C = 16 and 10 classes by default. A **cell** has four nodes; node 0 is
the cell's input and node j (1..3) is the sum of ``op_ij(node i)`` over
i < j; the cell's output is node 3. The six edges carry one of :data:`OPS`:

* ``none`` — zero; emitted as a multiply by 0 (:class:`~.layers.Scale`), as
  the benchmark's PyTorch networks compute it (``x.mul(0.)``) and its
  latency tables include it;
* ``skip_connect`` — identity (no op; the tensor is reused);
* ``nor_conv_1x1`` / ``nor_conv_3x3`` — ReLU, conv (no bias, stride 1,
  same channels), BN (folded into the conv by both emitters);
* ``avg_pool_3x3`` — 3x3 average pool, stride 1, padding 1, padded
  positions not counted.

Every edge is computed, so every cell of the 15,625 builds, the 341 whose
cells disconnect input from output included (their output is a computed
zero, as in the benchmark). The **reduction block** is a ResNet basic
block: ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus a shortcut of a 2x2
average pool (stride 2) and a 1x1 conv.

Addressing. The *arch string* is NB201's own notation,
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (node j's incoming edges, ``op~i``).
The *index* here is fleetmeter's enumeration: the six edges in that order,
each a base-5 digit in :data:`OPS` order, the first edge most significant
(:func:`arch_from_index` / :func:`index_of_arch`). It is **not** the
benchmark's own index, whose order only its data files define; match rows
of a benchmark table by arch string. ``fleetmeter zoo build --family
nasbench201 --count N`` samples N cells uniformly; ``--arch STR`` and
``--arch-index I`` build given ones. The arch string and index are in each
file's metadata (``fleetmeter.hyperparameters``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

from .arch import Add, Architecture, ArchitectureError, AvgPool, BatchNorm, Conv2D, Dense, GlobalAvgPool, Scale
from .blocks import Net
from .sampling import Choice, Family, IntRange, Sampler

__all__ = ["NASBENCH201", "OPS", "NUM_ARCHS", "EDGES", "parse_arch", "format_arch", "arch_from_index",
           "index_of_arch", "build_nasbench201"]

#: Edge operations, in the order that defines :func:`arch_from_index` digits.
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: The six edges ``(i, j)`` (node i feeds node j), in arch-string order.
EDGES: Tuple[Tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625
CELLS_PER_STAGE = 5
BASE_CHANNELS = 16


def parse_arch(arch: str) -> Tuple[str, ...]:
    """The six edge ops of an NB201 arch string, in :data:`EDGES` order; ArchitectureError if malformed."""
    text = str(arch).strip()
    nodes = text.strip("|").split("|+|") if text else []
    if len(nodes) != 3:
        raise ArchitectureError(f"not a NAS-Bench-201 arch string (3 nodes separated by '+'): {arch!r}")
    ops: List[str] = []
    for j, node in enumerate(nodes, start=1):
        edges = node.strip("|").split("|")
        if len(edges) != j:
            raise ArchitectureError(f"node {j} of {arch!r} must have {j} incoming edge(s), got {len(edges)}")
        for i, edge in enumerate(edges):
            op, _, src = edge.partition("~")
            if op not in OPS:
                raise ArchitectureError(f"unknown op {op!r} in {arch!r}; ops: {', '.join(OPS)}")
            if src != str(i):
                raise ArchitectureError(f"edge {edge!r} of node {j} in {arch!r} must read node {i} ('{op}~{i}')")
            ops.append(op)
    return tuple(ops)


def format_arch(ops: Sequence[str]) -> str:
    """The arch string of six edge ops (inverse of :func:`parse_arch`)."""
    if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
        raise ArchitectureError(f"need six ops from {OPS}, got {list(ops)}")
    nodes, k = [], 0
    for j in (1, 2, 3):
        nodes.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(nodes)


def arch_from_index(index: int) -> str:
    """The arch string of fleetmeter's enumeration index (0 .. 15,624; see the module docstring)."""
    if not 0 <= int(index) < NUM_ARCHS:
        raise ArchitectureError(f"NAS-Bench-201 index must be in [0, {NUM_ARCHS - 1}], got {index}")
    digits, rest = [], int(index)
    for _ in EDGES:
        rest, d = divmod(rest, len(OPS))
        digits.append(d)
    return format_arch([OPS[d] for d in reversed(digits)])


def index_of_arch(arch: str) -> int:
    """fleetmeter's enumeration index of an arch string."""
    index = 0
    for op in parse_arch(arch):
        index = index * len(OPS) + OPS.index(op)
    return index


def _relu_conv_bn(net: Net, x: str, channels: int, kernel: int, name: str, stride: int = 1) -> str:
    """NB201's ReLUConvBN: a ReLU of its own (every edge has one), conv without bias, BN."""
    from .arch import Activation

    net.add(Activation("relu", name=f"{name}.relu", inputs=(x,)))
    net.add(Conv2D(channels, kernel, stride, bias=False, name=f"{name}.conv"))
    return net.add(BatchNorm(epsilon=1e-5, name=f"{name}.bn"))


def _cell(net: Net, x: str, channels: int, ops: Sequence[str], name: str) -> str:
    nodes = [x]
    k = 0
    for j in (1, 2, 3):
        terms = []
        for i in range(j):
            op, src, edge = ops[k], nodes[i], f"{name}.e{i}{j}"
            k += 1
            if op == "skip_connect":
                terms.append(src)
            elif op == "none":
                terms.append(net.add(Scale(0.0, name=edge, inputs=(src,))))
            elif op == "avg_pool_3x3":
                terms.append(net.add(AvgPool(3, 1, padding="same", name=edge, inputs=(src,))))
            else:
                terms.append(_relu_conv_bn(net, src, channels, 1 if op == "nor_conv_1x1" else 3, edge))
        total = terms[0]
        for n, term in enumerate(terms[1:], start=1):
            total = net.add(Add(name=f"{name}.n{j}.sum{n}", inputs=(total, term)))
        nodes.append(total)
    return nodes[3]


def _reduction(net: Net, x: str, channels: int, name: str) -> str:
    a = _relu_conv_bn(net, x, channels, 3, f"{name}.a", stride=2)
    b = _relu_conv_bn(net, a, channels, 3, f"{name}.b")
    net.add(AvgPool(2, 2, padding="valid", name=f"{name}.shortcut.pool", inputs=(x,)))
    short = net.add(Conv2D(channels, 1, bias=False, name=f"{name}.shortcut.conv"))
    return net.add(Add(name=f"{name}.add", inputs=(short, b)))


def build_nasbench201(name: str, hp: Mapping[str, Any]) -> Architecture:
    """The NB201 network of ``hp["arch"]`` (see the module docstring for every other key)."""
    ops = parse_arch(hp["arch"])
    c = int(hp.get("channels", BASE_CHANNELS))
    cells = int(hp.get("cells_per_stage", CELLS_PER_STAGE))
    size = int(hp.get("input_size", 32))
    net = Net(size, size, 3)
    net.add(Conv2D(c, 3, bias=False, name="stem.conv", inputs=(net.x,)))
    x = net.add(BatchNorm(epsilon=1e-5, name="stem.bn"))
    for stage in range(3):
        width = c * 2 ** stage
        if stage:
            x = _reduction(net, x, width, f"reduce{stage}")
        for cell in range(cells):
            x = _cell(net, x, width, ops, f"stage{stage + 1}.cell{cell + 1}")
    net.add(BatchNorm(epsilon=1e-5, activation="relu", name="lastact", inputs=(x,)))
    net.add(GlobalAvgPool(name="pool"))
    net.add(Dense(int(hp.get("num_classes", 10)), name="classifier"))
    hyperparameters = {**dict(hp), "arch": format_arch(ops), "arch_index": index_of_arch(format_arch(ops))}
    return net.finish(name, "nasbench201", hyperparameters)


_RANGES = {
    "arch_index": IntRange(0, NUM_ARCHS - 1, help="the cell: fleetmeter's enumeration of the 5^6 edge choices "
                                                  "(not the benchmark's own index); arch records the string"),
    "num_classes": Choice((10,), help="logits (the CIFAR-10 setting of the latency tables)"),
}


def _sample(s: Sampler) -> Dict[str, Any]:
    index = s.draw("arch_index")
    return {"arch_index": index, "arch": arch_from_index(index), "channels": BASE_CHANNELS,
            "cells_per_stage": CELLS_PER_STAGE, "input_size": 32, "num_classes": s.draw("num_classes")}


NASBENCH201 = Family(
    name="nasbench201",
    summary="NAS-Bench-201's CIFAR network (3 stages x 5 cells, 16/32/64 channels) for any of its 15,625 cells",
    ranges=_RANGES,
    sample_hyperparameters=_sample,
    build=build_nasbench201,
)
