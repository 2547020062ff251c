"""From onnxruntime operator profiles to kernel samples (the targets of :mod:`fleetmeter.modeler.kernels`).

A :class:`KernelSample` is one model on one platform: its measured latency and
its kernels (``ModelFeatures.kernels``) with the profiled time of each, as
:func:`load_kernel_samples` builds them from the store's measurements that
carry onnxruntime per-node profiles (:mod:`fleetmeter.agent.profile`).

From profile nodes to our kernels (:func:`match_profile`). onnxruntime
rewrites the graph before it runs it, and its profile names the nodes it
ran, not ours. Seen with onnxruntime 1.32 on the zoo's twelve families
(x86 CPU provider, default optimisation level):

* most nodes keep a name derived from ours: ``<name>`` unchanged,
  ``<name or output>_nchwc`` (the NCHWc layout transformer; BatchNorm
  rewritten as a 1x1 depthwise conv is ``<output>_bn_nchwc``), ``fused
  <name>`` (FusedGemm), ``<name>/<Something>Fusion`` or ``.../Fusion/``
  (QuickGelu for swish, MatMulAdd -> Gemm, MatMulScale, Gather/Slice ->
  Split), each maybe with a ``_token_<n>`` suffix that makes it unique;
* ORT fuses more than we do: ``Conv (+Clip) + Add`` (a residual add
  becomes the conv's ``Sum`` input under NCHWc), ``Sigmoid * x`` into one
  QuickGelu, the scale ``Mul`` into the next MatMul, ``Add + LayerNorm``
  into SkipLayerNormalization, three Slices into one Split;
* ORT invents nodes: ``ReorderInput``/``ReorderOutput`` (NCHW <-> NCHWc
  copies, a few percent of the time, up to ~10 % in a DenseNet), the
  ``gemm_input_reshape``/``gemm_output_reshape`` around a 3-D Gemm, and
  fused nodes named after nothing of ours (``SkipLayerNormalization``).

So a profile node is resolved, in this order: (1) by name, trying the name
and what is left after stripping the decorations above, against our raw
node names, then our tensor names (``_nchwc`` names are often the output's),
and for a ``.../Fusion`` name, names under that prefix; a raw node counts
for the fused kernel that contains it; (2) an unresolved compute node by its
first output shape, to the first kernel in graph order that no profile node
named; (3) a node resolved to one of our layout records (Reshape, Transpose)
is attached to the kernel that produced its input; any other unresolved
node (runtime layout nodes such as Reorder*, or nodes ORT made up, such as
the ``HardSigmoid_<n>`` and ``Mul_<n>`` it decomposes a HardSwish into
after a Gemm) to the nearest resolved node in execution order
(``ReorderInput`` and input reshapes to the next one, others to the
previous one, preferring one whose tensor shape matches). Then our
kernels that no profile node reached but that ORT evidently fused into a
neighbour join that neighbour's group: a sibling of the same op type on the
same inputs (Slices -> Split), a producer whose only reader it is, or a
consumer that is its only reader. Every group of kernels shares the time of
its profile nodes in proportion to :func:`kernel_work`. A kernel reached by
none of this has no time (``None``): it still counts at predict time, and
the fitted overhead absorbs what it costs. On the zoo (see the integration
test) 98-100 % of the profiled time lands on kernels; what does not is an
ORT node that no rule places, reported in :attr:`ProfileMatch.unmatched`.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Set, Tuple

from fleetmeter.blobs import BlobStore

from .features import ModelFeatures, NodeFeatures

__all__ = [
    "MIN_MATCHED_SHARE",
    "KernelSample",
    "ProfileMatch",
    "kernel_work",
    "match_profile",
    "merge_profiles",
    "kernel_sample_from_profile",
    "load_kernel_samples",
]

log = logging.getLogger(__name__)

#: A model whose profile puts less than this share of its time on kernels is not used (the match failed).
MIN_MATCHED_SHARE = 0.5

KernelRecord = Tuple[str, Mapping[str, float], Optional[float]]


def kernel_work(features: Mapping[str, float]) -> float:
    """A kernel's size: ``macs + (param_bytes + act_read_bytes + act_write_bytes) / 4`` (MACs + elements moved).

    Data movers (concat, split, pad) have no MACs but do move bytes, so this
    orders every kind of kernel by what it costs, to first order.
    """
    moved = features.get("param_bytes", 0.0) + features.get("act_read_bytes", 0.0) + features.get(
        "act_write_bytes", 0.0)
    return float(features.get("macs", 0.0) + moved / 4.0)


@dataclass(frozen=True)
class KernelSample:
    """One model on one platform: measured latency and its kernels with their profiled times.

    ``kernels`` are ``(kernel_type, numeric features, time_ms)`` in the order
    of ``ModelFeatures.kernels``; the features are :meth:`NodeFeatures.numeric`
    (what :meth:`~fleetmeter.modeler.kernels.KernelPredictor.predict`
    computes from a model file) and ``time_ms`` is the profiled time
    attributed to the kernel, ``None`` when no profile node reached it.
    ``latency_ms`` is the median over the measurement repeats,
    ``profiled_ms`` the sum of every profiled node's median time,
    ``matched_ms`` the part of it attributed to kernels.
    ``model_features`` is the flat ``ModelFeatures.model`` dict.
    """

    model_sha256: str
    family: str
    platform_id: str
    latency_ms: float
    kernels: Tuple[KernelRecord, ...] = field(repr=False)
    model_features: Mapping[str, float] = field(default_factory=dict, repr=False)
    profiled_ms: float = 0.0
    matched_ms: float = 0.0
    model_name: str = ""


@dataclass(frozen=True)
class ProfileMatch:
    """How one profile maps onto ``ModelFeatures.kernels`` (see the module docstring).

    ``kernel_times_ms`` has one entry per kernel (``None``: not reached);
    ``by_name``/``by_shape``/``attached`` count profile nodes resolved each
    way, ``absorbed`` counts kernels that joined a neighbour's group;
    ``unmatched`` names the profile nodes whose time reached no kernel.
    ``resolved_ms`` is the time of the nodes found by name (ours, layout
    records included) or shape; the rest of ``matched_ms`` is runtime-made
    nodes attached to a neighbour in execution order. ``resolution`` says,
    per profile node in execution order, how it was placed: ``"name"``,
    ``"shape"``, ``"attached"`` or ``""`` (nowhere); unlike the times, it
    does not change from one profiling run to the next.
    """

    kernel_times_ms: Tuple[Optional[float], ...]
    profiled_ms: float
    matched_ms: float
    by_name: int = 0
    by_shape: int = 0
    attached: int = 0
    absorbed: int = 0
    unmatched: Tuple[str, ...] = ()
    resolved_ms: float = 0.0
    resolution: Tuple[str, ...] = ()

    @property
    def matched_share(self) -> float:
        return self.matched_ms / self.profiled_ms if self.profiled_ms > 0 else 0.0


# ------------------------------------------------------------------ matching

#: Decorations onnxruntime adds to the names of the nodes it rewrites (stripped one at a time).
_SUFFIX = re.compile(r"(_token_\d+|_nchwc|_bn|_new_reshape)$")
_FUSED_PREFIX = "fused "
#: Runtime-invented layout/copy nodes: attached to a neighbour when their name resolves to nothing.
_RUNTIME_LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Reshape", "Transpose", "Flatten", "Squeeze",
                                 "Unsqueeze", "Identity", "Expand"})


def _name_candidates(name: str) -> List[Tuple[str, bool]]:
    """``(candidate, prefix_ok)`` in the order tried; ``prefix_ok`` once a ``.../Fusion`` segment was cut."""
    out: List[Tuple[str, bool]] = []
    seen: Set[str] = set()
    frontier = [(name, False)]
    while frontier:
        current, prefix_ok = frontier.pop(0)
        if not current or current in seen:
            continue
        seen.add(current)
        out.append((current, prefix_ok))
        m = _SUFFIX.search(current)
        if m:
            frontier.append((current[:m.start()], prefix_ok))
        if current.startswith(_FUSED_PREFIX):
            frontier.append((current[len(_FUSED_PREFIX):], prefix_ok))
        if current.endswith("/"):
            frontier.append((current.rstrip("/"), prefix_ok))
        elif "/" in current:
            head, tail = current.rsplit("/", 1)
            if tail.endswith("Fusion"):
                frontier.append((head, True))
    return out


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


class _Graph:
    """Our side of the match: fused records (kernels and layout), raw-node membership, tensor links."""

    def __init__(self, features: ModelFeatures) -> None:
        self.nodes: List[NodeFeatures] = list(features.nodes)
        self.kernel_index: Dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            if not node.is_layout:
                self.kernel_index[i] = len(self.kernel_index)
        raw = list(features.raw_nodes) or self.nodes
        owner = self._membership(raw)
        self.by_name: Dict[str, List[int]] = {}
        self.by_tensor: Dict[str, int] = {}
        for node, i in zip(raw, owner):
            if i is None:
                continue
            self.by_name.setdefault(node.name, []).append(i)
            for t in node.outputs:
                self.by_tensor.setdefault(t, i)
        self.sorted_names = sorted(self.by_name)
        self.producer: Dict[str, int] = {}
        self.readers: Dict[str, List[int]] = {}
        for i, node in enumerate(self.nodes):
            for t in node.outputs:
                self.producer[t] = i
            for t in node.inputs:
                self.readers.setdefault(t, []).append(i)

    def _membership(self, raw: Sequence[NodeFeatures]) -> List[Optional[int]]:
        """Index of the fused record each raw node went into (replays :func:`fuse_activations`)."""
        owner: List[Optional[int]] = []
        produced: Dict[str, int] = {}
        j = 0
        for node in raw:
            head = self.nodes[j] if j < len(self.nodes) else None
            if head is not None and (head is node or (head.name == node.name and head.raw_op == node.raw_op
                                                      and head.inputs == node.inputs)):
                index: Optional[int] = j
                j += 1
            else:  # a follower merged into the record that produced its input
                index = next((produced[t] for t in node.inputs if t in produced), None)
            owner.append(index)
            if index is not None:
                for t in node.outputs:
                    produced[t] = index
        return owner

    def is_kernel(self, i: int) -> bool:
        return i in self.kernel_index

    def resolve(self, name: str) -> List[int]:
        """Record indices a profile node name stands for (empty: unresolved)."""
        for candidate, prefix_ok in _name_candidates(name):
            hits = self.by_name.get(candidate)
            if not hits and candidate in self.by_tensor:
                hits = [self.by_tensor[candidate]]
            if not hits and prefix_ok:
                hits = self._under(candidate + "/")
            if hits:
                return sorted(set(hits))
        return []

    def _under(self, prefix: str) -> List[int]:
        import bisect

        start = bisect.bisect_left(self.sorted_names, prefix)
        out: List[int] = []
        for name in self.sorted_names[start:]:
            if not name.startswith(prefix):
                break
            out.extend(self.by_name[name])
        return out

    def _nearest_kernel(self, i: int, step: Callable[[int], Iterable[int]]) -> Optional[int]:
        """The first kernel reached from record ``i`` breadth-first along ``step``, through layout records."""
        seen: Set[int] = set()
        frontier = [i]
        while frontier:
            for j in step(frontier.pop(0)):
                if j in seen:
                    continue
                seen.add(j)
                if self.is_kernel(j):
                    return j
                frontier.append(j)
        return None

    def upstream_kernel(self, i: int) -> Optional[int]:
        """The kernel that produced record ``i``'s input, looking through layout records."""
        return self._nearest_kernel(i, lambda c: (p for p in map(self.producer.get, self.nodes[c].inputs)
                                                  if p is not None))

    def downstream_kernel(self, i: int) -> Optional[int]:
        """The kernel that reads record ``i``'s output, looking through layout records."""
        return self._nearest_kernel(i, lambda c: (r for t in self.nodes[c].outputs for r in self.readers.get(t, ())))

    def sole_neighbours(self, i: int) -> List[int]:
        """Kernels ORT may have fused ``i`` into: a producer whose only reader ``i`` is, or its only reader.

        Layout records in between are looked through when each has one reader.
        """
        def sole_producer(t: str) -> Optional[int]:
            p = self.producer.get(t)
            return p if p is not None and len(self.nodes[p].outputs) == 1 else None

        up = [self._along_sole_links(t, sole_producer, lambda p: self.nodes[p].inputs) for t in self.nodes[i].inputs]
        outputs = self.nodes[i].outputs
        down = [self._along_sole_links(outputs[0], lambda t: self.readers[t][0], lambda r: self.nodes[r].outputs)
                ] if len(outputs) == 1 else []
        return [k for k in up + down if k is not None]

    def _along_sole_links(self, t: str, record_of: Callable[[str], Optional[int]],
                          onward: Callable[[int], Sequence[str]]) -> Optional[int]:
        """The first kernel along tensors that have one reader each, from ``t``: ``record_of`` a tensor is
        the next record (``None``: the chain ends), ``onward`` its tensors (the chain goes on through one)."""
        while len(self.readers.get(t, ())) == 1:
            j = record_of(t)
            if j is None:
                return None
            if self.is_kernel(j):
                return j
            following = onward(j)
            if len(following) != 1:
                return None
            t = following[0]
        return None

    def siblings(self, i: int) -> List[int]:
        node = self.nodes[i]
        return [j for j in self.kernel_index if j != i and self.nodes[j].op_type == node.op_type
                and self.nodes[j].inputs == node.inputs]


class _Groups:
    """Union-find over record indices."""

    def __init__(self) -> None:
        self.parent: Dict[int, int] = {}

    def add(self, i: int) -> None:
        self.parent.setdefault(i, i)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.add(a)
        self.add(b)
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _median_us(op: Mapping[str, Any]) -> float:
    try:
        value = float(op.get("median_us", 0.0))
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def match_profile(features: ModelFeatures, operators: Sequence[Mapping[str, Any]]) -> ProfileMatch:
    """Attribute each profiled node's median time to ``features.kernels`` (see the module docstring).

    ``operators`` are the records of :func:`fleetmeter.agent.profile.parse_ort_profile`
    (``node_name``, ``op_type``, ``input_shapes``, ``output_shapes``,
    ``median_us``), in execution order.
    """
    graph = _Graph(features)
    ops = list(operators)
    times = [_median_us(o) for o in ops]
    # (1) by name: targets[n] are the kernel record indices profile node n's time goes to
    targets, how, layout_hits = _match_by_name(graph, ops)
    # (2) unresolved compute nodes by output shape, to kernels no name reached
    _match_by_shape(graph, ops, targets, how, layout_hits)
    groups, absorbed = _fused_groups(graph, targets)
    # (3) layout: ours to the producing kernel; the runtime's to the nearest resolved node in execution order
    _attach_layout(graph, ops, targets, how, layout_hits)
    profiled_us = sum(times)
    matched_us = sum(t for n, t in enumerate(times) if targets[n])
    return ProfileMatch(
        kernel_times_ms=tuple(_kernel_times_ms(graph, groups, targets, times)), profiled_ms=profiled_us / 1000.0,
        matched_ms=matched_us / 1000.0,
        by_name=how.count("name"), by_shape=how.count("shape"), attached=how.count("attached"), absorbed=absorbed,
        resolved_ms=sum(t for n, t in enumerate(times) if how[n] in ("name", "shape") or (
            targets[n] and n in layout_hits)) / 1000.0,
        unmatched=tuple(str(ops[n].get("node_name", "")) for n in range(len(ops)) if not targets[n] and times[n]),
        resolution=tuple(how))


def _match_by_name(graph: _Graph, ops: Sequence[Mapping[str, Any]]
                   ) -> Tuple[List[List[int]], List[str], Dict[int, List[int]]]:
    """``(targets, how, layout_hits)``: each profile node's kernels and ``"name"`` where its name resolves to
    kernels; ``layout_hits`` the profile nodes whose name resolves to our layout records only."""
    targets: List[List[int]] = [[] for _ in ops]
    how: List[str] = [""] * len(ops)
    layout_hits: Dict[int, List[int]] = {}
    for n, op in enumerate(ops):
        hits = graph.resolve(str(op.get("node_name", "")))
        kernels = [i for i in hits if graph.is_kernel(i)]
        if kernels:
            targets[n], how[n] = kernels, "name"
        elif hits:
            layout_hits[n] = hits
    return targets, how, layout_hits


def _match_by_shape(graph: _Graph, ops: Sequence[Mapping[str, Any]], targets: List[List[int]], how: List[str],
                    layout_hits: Mapping[int, List[int]]) -> None:
    """Each compute node still unresolved goes to the first kernel no name reached with its output shape."""
    named = {i for t in targets for i in t}
    taken: Set[int] = set()
    for n, op in enumerate(ops):
        if how[n] or n in layout_hits or op.get("op_type") in _RUNTIME_LAYOUT_OPS:
            continue
        outs = list(op.get("output_shapes") or [])
        if not outs:
            continue
        for i in graph.kernel_index:
            node = graph.nodes[i]
            if i in named or i in taken or not node.output_shapes:
                continue
            if _shape_text(node.output_shapes[0]) == outs[0]:
                targets[n], how[n] = [i], "shape"
                taken.add(i)
                break


def _fused_groups(graph: _Graph, targets: Sequence[List[int]]) -> Tuple[_Groups, int]:
    """Kernels sharing a profile node, grouped; then kernels no profile node reached join a neighbour ORT
    fused them into. ``(groups, how many joined)``."""
    groups = _Groups()
    for kernels in targets:
        for i in kernels:
            groups.add(i)
        for i in kernels[1:]:
            groups.union(kernels[0], i)
    absorbed = 0
    changed = True
    while changed:
        changed = False
        for i in graph.kernel_index:
            if i in groups.parent:
                continue
            host = next((j for j in graph.siblings(i) + graph.sole_neighbours(i) if j in groups.parent), None)
            if host is not None:
                groups.union(host, i)
                absorbed += 1
                changed = True
    return groups, absorbed


def _attach_layout(graph: _Graph, ops: Sequence[Mapping[str, Any]], targets: List[List[int]], how: List[str],
                   layout_hits: Mapping[int, List[int]]) -> None:
    """Layout nodes: ours to the producing (else the reading) kernel; the runtime's, and nodes ORT invented
    (a decomposed HardSwish), to the nearest resolved node in execution order (:func:`_neighbour`)."""
    for n, hits in layout_hits.items():
        k = next((graph.upstream_kernel(i) for i in hits if graph.upstream_kernel(i) is not None), None)
        if k is None:
            k = next((graph.downstream_kernel(i) for i in hits if graph.downstream_kernel(i) is not None), None)
        if k is not None:
            targets[n], how[n] = [k], "attached"
    resolved = [n for n in range(len(ops)) if how[n] in ("name", "shape")]
    for n in range(len(ops)):
        if how[n] or n in layout_hits:
            continue
        m = _neighbour(ops, resolved, n)
        if m is not None:
            targets[n], how[n] = list(targets[m]), "attached"


def _kernel_times_ms(graph: _Graph, groups: _Groups, targets: Sequence[List[int]], times: Sequence[float]
                     ) -> List[Optional[float]]:
    """Each kernel's time: its group's profile time, shared by :func:`kernel_work` (``None``: no time)."""
    group_us: Dict[int, float] = {}
    for kernels in targets:
        for i in kernels:
            groups.add(i)
    for n, kernels in enumerate(targets):
        if kernels:
            root = groups.find(kernels[0])
            group_us[root] = group_us.get(root, 0.0) + times[n]
    members: Dict[int, List[int]] = {}
    for i in groups.parent:
        members.setdefault(groups.find(i), []).append(i)
    kernel_times: List[Optional[float]] = [None] * len(graph.kernel_index)
    for root, idx in members.items():
        total_us = group_us.get(root, 0.0)
        weights = [max(kernel_work(graph.nodes[i].numeric()), 0.0) for i in idx]
        norm = sum(weights)
        for i, w in zip(idx, weights):
            share = w / norm if norm > 0 else 1.0 / len(idx)
            kernel_times[graph.kernel_index[i]] = total_us * share / 1000.0
    return kernel_times


def _neighbour(ops: Sequence[Mapping[str, Any]], resolved: Sequence[int], n: int) -> Optional[int]:
    """The resolved profile node a runtime layout node ``n`` belongs with (see the module docstring)."""
    op = ops[n]
    name = str(op.get("node_name", ""))
    forward = op.get("op_type") == "ReorderInput" or "input" in name.lower()
    after = [m for m in resolved if m > n]
    before = [m for m in reversed(resolved) if m < n]
    first, second = (after, before) if forward else (before, after)
    shapes = set(op.get("input_shapes") or []) | set(op.get("output_shapes") or [])
    for m in first:  # prefer the closest one on the expected side whose tensor shape matches
        other = ops[m].get("input_shapes" if forward else "output_shapes") or []
        if other and other[0] in shapes:
            return m
    if first:
        return first[0]
    return second[0] if second else None


def merge_profiles(profiles: Sequence[Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """Several profiles of one model on one platform as one: per node name, the median of ``median_us``.

    Node order is the first profile's, then nodes first seen later.
    """
    order: List[str] = []
    first: Dict[str, Mapping[str, Any]] = {}
    values: Dict[str, List[float]] = {}
    for profile in profiles:
        for op in profile:
            name = str(op.get("node_name", ""))
            if name not in first:
                first[name] = op
                order.append(name)
            values.setdefault(name, []).append(_median_us(op))
    return [{**first[name], "median_us": float(statistics.median(values[name]))} for name in order]


def kernel_sample_from_profile(
    features: ModelFeatures,
    operators: Sequence[Mapping[str, Any]],
    latency_ms: float,
    *,
    model_sha256: str = "",
    family: str = "",
    platform_id: str = "",
    model_name: str = "",
) -> KernelSample:
    """A :class:`KernelSample` from a model's features, its operator profile and its measured latency."""
    if not (math.isfinite(latency_ms) and latency_ms > 0):
        raise ValueError(f"latency_ms must be positive, got {latency_ms}")
    match = match_profile(features, operators)
    kernels = tuple((node.kernel_type, node.numeric(), t) for node, t in zip(features.kernels,
                                                                               match.kernel_times_ms))
    return KernelSample(model_sha256=model_sha256, family=family, platform_id=platform_id,
                        latency_ms=float(latency_ms), kernels=kernels, model_features=dict(features.model),
                        profiled_ms=match.profiled_ms, matched_ms=match.matched_ms, model_name=model_name)


def load_kernel_samples(
    store: Any,
    blobs_root: Any,
    platform_ids: Optional[Iterable[str]] = None,
    cache: Optional[MutableMapping[str, ModelFeatures]] = None,
) -> List[KernelSample]:
    """Kernel samples from the store's successful ONNX measurements that carry operator profiles.

    Per (model, platform): ``latency_ms`` is the median of the measurements'
    latency medians, the profile the :func:`merge_profiles` of those that
    have one. Skipped with a warning in the log: a model whose file is
    missing or does not parse, and one whose profile puts less than
    :data:`MIN_MATCHED_SHARE` of its time on kernels (not the file that was
    profiled, or a runtime that renames beyond recognition). ``cache`` maps
    sha256 to ``ModelFeatures`` (pass a dict to share across calls).
    Samples come sorted by platform, then model sha256.
    """
    from .dataset import usable_for_training

    wanted = set(platform_ids) if platform_ids is not None else None
    cache = cache if cache is not None else {}
    models = {m["sha256"]: m for m in store.list_models()}
    latencies: Dict[Tuple[str, str], List[float]] = {}
    profiles: Dict[Tuple[str, str], List[Sequence[Mapping[str, Any]]]] = {}
    for record in store.list_measurements(include_samples=False):
        if not usable_for_training(record):
            continue
        key = (record["model_sha256"], record["platform_id"])
        if wanted is not None and key[1] not in wanted:
            continue
        if (models.get(key[0]) or {}).get("format", "onnx") != "onnx":
            continue
        median = (record.get("latency_ms") or {}).get("median")
        if median is not None and math.isfinite(float(median)) and float(median) > 0:
            latencies.setdefault(key, []).append(float(median))
        if record.get("operators"):
            profiles.setdefault(key, []).append(record["operators"])
    blobs = BlobStore(blobs_root)
    samples: List[KernelSample] = []
    unusable: Set[str] = set()
    for key in sorted(profiles, key=lambda k: (k[1], k[0])):
        sha, platform = key
        if sha in unusable or not latencies.get(key):
            continue
        features = cache.get(sha)
        if features is None:
            try:
                from .features import extract_features

                features = extract_features(blobs.path(sha))
            except (OSError, ValueError) as exc:  # missing blob, corrupt model (InvalidArgument is a ValueError)
                unusable.add(sha)
                log.warning("skipping model %s: no usable model file (%s)", sha[:12], exc)
                continue
            cache[sha] = features
        model = models.get(sha, {})
        sample = kernel_sample_from_profile(
            features, merge_profiles(profiles[key]), float(statistics.median(latencies[key])), model_sha256=sha,
            family=(model.get("info") or {}).get("family", "") or "", platform_id=platform,
            model_name=model.get("name", ""))
        share = sample.matched_ms / sample.profiled_ms if sample.profiled_ms > 0 else 0.0
        if share < MIN_MATCHED_SHARE:
            log.warning("skipping model %s on %s: only %.0f%% of its profiled time matched its kernels",
                        sha[:12], platform, 100 * share)
            continue
        samples.append(sample)
    return samples
