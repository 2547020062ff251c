"""Kernel-level latency predictors, as nn-Meter does: one regressor per (fused) kernel type.

What is learned. A model's latency on one platform is predicted as the sum
of its kernels' predicted times plus a per-inference overhead::

    latency_ms = sum_k f_type(k)(features(k)) + intercept_ms + per_kernel_ms * kernel_count

The kernels are ``ModelFeatures.kernels`` of
:func:`fleetmeter.modeler.features.extract_features` (fused as
:func:`~fleetmeter.modeler.features.fuse_activations` fuses, layout ops
left out), and ``features(k)`` is :meth:`NodeFeatures.numeric` plus
``work`` (:func:`kernel_work`), so a prediction needs the model file only.
The training targets come from onnxruntime's per-node profiles
(:mod:`fleetmeter.agent.profile`, stored with a measurement when its sweep
set ``profile_operators``).

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

Per kernel type (:class:`KernelPredictor`): with at least
:data:`MIN_KERNEL_SAMPLES` timed kernels, a LightGBM regressor on
``log(time_ms)`` (:func:`fleetmeter.modeler.train.lgbm_params`, the same
small-data parameters as the model-level predictor) boosting from a
log-log prior on ``work`` (:class:`~fleetmeter.modeler.train.LogLogPrior`);
with fewer (``"rate"``), a global log-log curve of time over ``work``
fitted on every timed kernel, shifted by the type's median log residual;
a type never seen in training (``"global"``, listed by
:meth:`KernelPredictor.unseen_kernel_types`) gets that global curve alone.

Overhead: ``latency_ms - sum of kernel predictions`` over the training
models, fitted as ``intercept_ms + per_kernel_ms * kernel_count`` by
iteratively reweighted least absolute *relative* deviations (robust to a
few odd models, scored like the metrics). It is what the profile does not
see (session and copy costs, unmatched nodes) minus the profiler's own
inflation of per-node times.

Interval, splits and metrics are the model-level ones
(:mod:`fleetmeter.modeler.train`): a cross-conformal interval from
out-of-fold ``|log(pred / true)|`` at the model level, the same hash-based
:func:`~fleetmeter.modeler.train.split_random` and
:func:`~fleetmeter.modeler.train.split_leave_family_out` (they take
:class:`KernelSample` as they take ``Sample``: only ``model_sha256``,
``platform_id`` and ``family`` are read), and the same report shape. The
same samples give the same predictor, in whatever order they come.

Persistence: :meth:`KernelPredictor.config` (JSON-ready) and
:meth:`KernelPredictor.model_texts` (LightGBM text per kernel type, no
pickles) rebuild it exactly with :meth:`KernelPredictor.from_parts`.

LightGBM is imported on first use (``pip install 'fleetmeter[modeler]'``).
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import (Any, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Set, Tuple,
                    Union)

import numpy as np

from .features import FEATURE_SCHEMA_VERSION, KERNEL_FEATURE_KEYS, ModelFeatures, NodeFeatures
from .metrics import evaluate
from .train import (CV_FOLDS, INTERVAL_LEVEL, LogLogPrior, _booster_feature_names, _conformal_quantile,
                    _coverage, _folds, _lgb, lgbm_params, split_leave_family_out)

__all__ = [
    "KERNEL_CONFIG_FORMAT",
    "KERNEL_CONFIG_VERSION",
    "KERNEL_COLUMNS",
    "MIN_KERNEL_SAMPLES",
    "KERNEL_ROUNDS",
    "KernelSample",
    "ProfileMatch",
    "kernel_work",
    "match_profile",
    "merge_profiles",
    "kernel_sample_from_profile",
    "load_kernel_samples",
    "KernelPredictor",
    "train_kernel_predictor",
    "evaluate_kernel_split",
    "evaluate_kernel_leave_family_out",
]

log = logging.getLogger(__name__)

KERNEL_CONFIG_FORMAT = "fleetmeter.kernel_predictor"
#: Bump when the meaning of :meth:`KernelPredictor.config` changes.
KERNEL_CONFIG_VERSION = 1
#: The per-kernel feature columns: :data:`KERNEL_FEATURE_KEYS` then ``work``.
KERNEL_COLUMNS: Tuple[str, ...] = tuple(KERNEL_FEATURE_KEYS) + ("work",)
#: Fewer timed kernels of a type than this and it gets the shifted global curve instead of LightGBM.
MIN_KERNEL_SAMPLES = 10
#: Boosting rounds per kernel type.
KERNEL_ROUNDS = 200
#: A model whose profile puts less than this share of its time on kernels is not used (the match failed).
MIN_MATCHED_SHARE = 0.5

KernelRecord = Tuple[str, Mapping[str, float], Optional[float]]
KernelItem = Union[ModelFeatures, "KernelSample"]


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
    (what :meth:`KernelPredictor.predict` computes from a model file) and
    ``time_ms`` is the profiled time attributed to the kernel, ``None`` when
    no profile node reached it. ``latency_ms`` is the median over the
    measurement repeats, ``profiled_ms`` the sum of every profiled node's
    median time, ``matched_ms`` the part of it attributed to kernels.
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
    nodes attached to a neighbour in execution order.
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

    def upstream_kernel(self, i: int) -> Optional[int]:
        """The kernel that produced record ``i``'s input, looking through layout records."""
        seen: Set[int] = set()
        frontier = [i]
        while frontier:
            current = frontier.pop(0)
            for t in self.nodes[current].inputs:
                p = self.producer.get(t)
                if p is None or p in seen:
                    continue
                seen.add(p)
                if self.is_kernel(p):
                    return p
                frontier.append(p)
        return None

    def downstream_kernel(self, i: int) -> Optional[int]:
        seen: Set[int] = set()
        frontier = [i]
        while frontier:
            current = frontier.pop(0)
            for t in self.nodes[current].outputs:
                for r in self.readers.get(t, ()):
                    if r in seen:
                        continue
                    seen.add(r)
                    if self.is_kernel(r):
                        return r
                    frontier.append(r)
        return None

    def sole_neighbours(self, i: int) -> List[int]:
        """Kernels ORT may have fused ``i`` into: a producer whose only reader ``i`` is, or its only reader.

        Layout records in between are looked through when each has one reader.
        """
        out: List[int] = []
        for t in self.nodes[i].inputs:
            p = self.producer.get(t)
            while p is not None and len(self.readers.get(t, ())) == 1 and len(self.nodes[p].outputs) == 1:
                if self.is_kernel(p):
                    out.append(p)
                    break
                if len(self.nodes[p].inputs) != 1:
                    break
                t = self.nodes[p].inputs[0]
                p = self.producer.get(t)
        node = self.nodes[i]
        if len(node.outputs) == 1:
            t = node.outputs[0]
            while len(self.readers.get(t, ())) == 1:
                r = self.readers[t][0]
                if self.is_kernel(r):
                    out.append(r)
                    break
                if len(self.nodes[r].outputs) != 1:
                    break
                t = self.nodes[r].outputs[0]
        return out

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
    targets: List[List[int]] = [[] for _ in ops]  # kernel record indices each profile node's time goes to
    how: List[str] = [""] * len(ops)
    layout_hits: Dict[int, List[int]] = {}
    for n, op in enumerate(ops):
        hits = graph.resolve(str(op.get("node_name", "")))
        kernels = [i for i in hits if graph.is_kernel(i)]
        if kernels:
            targets[n], how[n] = kernels, "name"
        elif hits:
            layout_hits[n] = hits
    named = {i for t in targets for i in t}
    # (2) unresolved compute nodes by output shape, to kernels no name reached
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
    # groups: kernels sharing a profile node; then kernels no profile node reached join a neighbour ORT fused them into
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
    # (3) layout: ours to the producing kernel; the runtime's to the nearest resolved node in execution order
    for n, hits in layout_hits.items():
        k = next((graph.upstream_kernel(i) for i in hits if graph.upstream_kernel(i) is not None), None)
        if k is None:
            k = next((graph.downstream_kernel(i) for i in hits if graph.downstream_kernel(i) is not None), None)
        if k is not None:
            targets[n], how[n] = [k], "attached"
    resolved = [n for n in range(len(ops)) if how[n] in ("name", "shape")]
    for n, op in enumerate(ops):  # runtime layout nodes, then nodes ORT invented (a decomposed HardSwish)
        if how[n] or n in layout_hits:
            continue
        m = _neighbour(ops, resolved, n)
        if m is not None:
            targets[n], how[n] = list(targets[m]), "attached"
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
    profiled_us = sum(times)
    matched_us = sum(t for n, t in enumerate(times) if targets[n])
    return ProfileMatch(
        kernel_times_ms=tuple(kernel_times), profiled_ms=profiled_us / 1000.0, matched_ms=matched_us / 1000.0,
        by_name=how.count("name"), by_shape=how.count("shape"), attached=how.count("attached"), absorbed=absorbed,
        resolved_ms=sum(t for n, t in enumerate(times) if how[n] in ("name", "shape") or (
            targets[n] and n in layout_hits)) / 1000.0,
        unmatched=tuple(str(ops[n].get("node_name", "")) for n in range(len(ops)) if not targets[n] and times[n]))


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
    from fleetmeter.controller.blobs import BlobStore

    wanted = set(platform_ids) if platform_ids is not None else None
    cache = cache if cache is not None else {}
    models = {m["sha256"]: m for m in store.list_models()}
    latencies: Dict[Tuple[str, str], List[float]] = {}
    profiles: Dict[Tuple[str, str], List[Sequence[Mapping[str, Any]]]] = {}
    for record in store.list_measurements(include_samples=False):
        if record.get("failure_kind"):
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


# ---------------------------------------------------------------- predictor


def _kernels_of(item: KernelItem) -> List[Tuple[str, Mapping[str, float]]]:
    if isinstance(item, KernelSample):
        return [(t, f) for t, f, _ in item.kernels]
    if isinstance(item, ModelFeatures):
        return [(n.kernel_type, n.numeric()) for n in item.kernels]
    raise TypeError(f"expected ModelFeatures or KernelSample, got {type(item).__name__}")


def _row(features: Mapping[str, float]) -> List[float]:
    return [float(features.get(c, 0.0)) for c in KERNEL_FEATURE_KEYS] + [kernel_work(features)]


def _work_dicts(rows: np.ndarray) -> List[Dict[str, float]]:
    return [{"work": float(w)} for w in rows[:, -1]]


@dataclass
class _TypeModel:
    """One kernel type's regressor: ``"lgbm"`` (prior + booster) or ``"rate"`` (global curve + offset)."""

    kind: str
    n_obs: int
    prior: Optional[LogLogPrior] = None
    booster: Any = field(default=None, repr=False)
    offset_log: float = 0.0


@dataclass
class KernelPredictor:
    """Kernel-level latency predictor for one platform (see the module docstring).

    ``types`` maps a kernel type to its regressor; ``global_prior`` is the
    log-log curve of kernel time over ``work`` for unseen types;
    ``intercept_ms + per_kernel_ms * kernel_count`` is the overhead;
    predictions are floored at ``floor_ms``. ``interval_log`` is the
    half-width of the :data:`INTERVAL_LEVEL` interval in log space
    (``None`` if not calibrated).
    """

    types: Dict[str, _TypeModel]
    global_prior: LogLogPrior
    intercept_ms: float
    per_kernel_ms: float
    floor_ms: float
    kernel_scale: float = 1.0
    interval_log: Optional[float] = None
    interval_level: float = INTERVAL_LEVEL
    n_train: int = 0
    seed: int = 0
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    params: Dict[str, Any] = field(default_factory=dict, repr=False)

    def kernel_predictions(self, items: Sequence[KernelItem]) -> List[np.ndarray]:
        """Predicted time (ms) of every kernel of every item, in ``ModelFeatures.kernels`` order."""
        per_item = [_kernels_of(item) for item in items]
        by_type: Dict[str, List[Tuple[int, int]]] = {}
        rows: Dict[str, List[List[float]]] = {}
        for a, kernels in enumerate(per_item):
            for b, (kind, feats) in enumerate(kernels):
                by_type.setdefault(kind, []).append((a, b))
                rows.setdefault(kind, []).append(_row(feats))
        out = [np.zeros(len(k)) for k in per_item]
        for kind in sorted(by_type):
            x = np.asarray(rows[kind], dtype=float).reshape(-1, len(KERNEL_COLUMNS))
            values = np.exp(self._log_type(kind, x))
            for (a, b), v in zip(by_type[kind], values):
                out[a][b] = v
        return out

    def _log_type(self, kind: str, x: np.ndarray) -> np.ndarray:
        model = self.types.get(kind)
        work = _work_dicts(x)
        if model is None:
            return self.global_prior.log_predict(work)
        if model.kind == "lgbm":
            return np.asarray(model.booster.predict(x), dtype=float) + model.prior.log_predict(work)
        return self.global_prior.log_predict(work) + model.offset_log

    def predict(self, items: Sequence[KernelItem]) -> np.ndarray:
        """Predicted latency (ms) of each ``ModelFeatures`` (or :class:`KernelSample`)."""
        if not len(items):
            return np.zeros(0)
        sums = np.asarray([k.sum() for k in self.kernel_predictions(items)], dtype=float)
        counts = np.asarray([len(_kernels_of(item)) for item in items], dtype=float)
        return np.maximum(self.kernel_scale * sums + self.intercept_ms + self.per_kernel_ms * counts, self.floor_ms)

    def predict_interval(self, items: Sequence[KernelItem]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(prediction, low, high)``; ``low``/``high`` are ``nan`` without a calibrated interval."""
        pred = self.predict(items)
        if self.interval_log is None:
            nan = np.full_like(pred, np.nan)
            return pred, nan, nan
        factor = math.exp(self.interval_log)
        return pred, pred / factor, pred * factor

    def unseen_kernel_types(self, model_features: KernelItem) -> List[str]:
        """Kernel types of the model that training never saw (predicted by the global curve), sorted."""
        return sorted({kind for kind, _ in _kernels_of(model_features) if kind not in self.types})

    def config(self) -> Dict[str, Any]:
        """Everything but the boosters, JSON-ready (see :meth:`model_texts`)."""
        return {
            "format": KERNEL_CONFIG_FORMAT,
            "version": KERNEL_CONFIG_VERSION,
            "feature_schema_version": self.feature_schema_version,
            "columns": list(KERNEL_COLUMNS),
            "types": {kind: {"kind": m.kind, "n_obs": m.n_obs, "prior": m.prior.to_dict() if m.prior else None,
                             "offset_log": m.offset_log} for kind, m in sorted(self.types.items())},
            "global_prior": self.global_prior.to_dict(),
            "overhead": {"kernel_scale": self.kernel_scale, "intercept_ms": self.intercept_ms,
                         "per_kernel_ms": self.per_kernel_ms},
            "floor_ms": self.floor_ms,
            "interval_log": self.interval_log,
            "interval_level": self.interval_level,
            "n_train": self.n_train,
            "seed": self.seed,
            "params": dict(self.params),
        }

    def model_texts(self) -> Dict[str, str]:
        """LightGBM's text model per kernel type that has one (``"lgbm"`` types)."""
        return {kind: m.booster.model_to_string() for kind, m in sorted(self.types.items()) if m.kind == "lgbm"}

    @classmethod
    def from_parts(cls, config: Mapping[str, Any], texts: Mapping[str, str]) -> "KernelPredictor":
        """The predictor :meth:`config` and :meth:`model_texts` describe (same predictions).

        Raises ``ValueError`` for a config of another format, version or
        feature schema, or a missing model text.
        """
        if config.get("format") != KERNEL_CONFIG_FORMAT or config.get("version") != KERNEL_CONFIG_VERSION:
            raise ValueError(f"not a version-{KERNEL_CONFIG_VERSION} {KERNEL_CONFIG_FORMAT} config: "
                             f"{config.get('format')!r} version {config.get('version')!r}")
        if config.get("feature_schema_version") != FEATURE_SCHEMA_VERSION or tuple(
                config.get("columns") or ()) != KERNEL_COLUMNS:
            raise ValueError(f"kernel predictor built on feature schema {config.get('feature_schema_version')}, "
                             f"this fleetmeter extracts schema {FEATURE_SCHEMA_VERSION}: retrain it")
        lgb = _lgb()
        types: Dict[str, _TypeModel] = {}
        for kind, entry in config["types"].items():
            booster = None
            if entry["kind"] == "lgbm":
                if kind not in texts:
                    raise ValueError(f"no model text for kernel type {kind!r}")
                booster = lgb.Booster(model_str=texts[kind])
            types[kind] = _TypeModel(kind=entry["kind"], n_obs=int(entry["n_obs"]),
                                     prior=LogLogPrior.from_dict(entry["prior"]) if entry.get("prior") else None,
                                     booster=booster, offset_log=float(entry.get("offset_log", 0.0)))
        overhead = config["overhead"]
        return cls(types=types, global_prior=LogLogPrior.from_dict(config["global_prior"]),
                   intercept_ms=float(overhead["intercept_ms"]), per_kernel_ms=float(overhead["per_kernel_ms"]),
                   kernel_scale=float(overhead["kernel_scale"]),
                   floor_ms=float(config["floor_ms"]),
                   interval_log=None if config.get("interval_log") is None else float(config["interval_log"]),
                   interval_level=float(config.get("interval_level", INTERVAL_LEVEL)),
                   n_train=int(config.get("n_train", 0)), seed=int(config.get("seed", 0)),
                   feature_schema_version=int(config["feature_schema_version"]),
                   params=dict(config.get("params") or {}))


# ------------------------------------------------------------------ training


def _canonical(samples: Iterable[KernelSample]) -> List[KernelSample]:
    return sorted(samples, key=lambda s: (s.model_sha256, s.platform_id))


def _fit_overhead(latency: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> Tuple[float, float, float]:
    """``(kernel_scale, intercept_ms, per_kernel_ms)`` minimising the summed absolute relative error (IRLS).

    Falls back to a scale of 1 (and then to a constant overhead) where the
    data cannot pin a coefficient down or the scale comes out non-positive.
    """
    columns = [sums, np.ones_like(counts), counts]
    for keep in ((0, 1, 2), (1, 2), (1,)):
        if 2 in keep and np.ptp(counts) == 0:
            continue
        design = np.column_stack([columns[i] for i in keep])
        target = latency if 0 in keep else latency - sums
        weights = 1.0 / latency ** 2
        coef = np.zeros(len(keep))
        for _ in range(50):
            sw = np.sqrt(weights)
            coef, *_ = np.linalg.lstsq(design * sw[:, None], target * sw, rcond=None)
            err = np.abs(target - design @ coef) / latency
            weights = 1.0 / (latency ** 2 * np.maximum(err, 1e-6))
        fitted = dict(zip(keep, (float(c) for c in coef)))
        if 0 in keep and not fitted[0] > 0:
            continue
        return fitted.get(0, 1.0), fitted.get(1, 0.0), fitted.get(2, 0.0)
    return 1.0, float(np.median(latency - sums)), 0.0


def _fit(samples: Sequence[KernelSample], seed: int, rounds: int) -> KernelPredictor:
    rows: Dict[str, List[List[float]]] = {}
    ys: Dict[str, List[float]] = {}
    for s in samples:
        for kind, feats, t in s.kernels:
            if t is not None and t > 0 and math.isfinite(t):
                rows.setdefault(kind, []).append(_row(feats))
                ys.setdefault(kind, []).append(math.log(t))
    if not ys:
        raise ValueError("no kernel in these samples has a profiled time: nothing to learn from")
    all_x = np.asarray([r for kind in sorted(rows) for r in rows[kind]], dtype=float)
    all_y = np.asarray([y for kind in sorted(ys) for y in ys[kind]], dtype=float)
    global_prior = LogLogPrior.fit(_work_dicts(all_x), all_y, "work")
    lgb = _lgb()
    names = _booster_feature_names(KERNEL_COLUMNS)
    types: Dict[str, _TypeModel] = {}
    for kind in sorted(rows):
        x = np.asarray(rows[kind], dtype=float)
        y = np.asarray(ys[kind], dtype=float)
        work = _work_dicts(x)
        if len(y) < MIN_KERNEL_SAMPLES:
            offset = float(np.median(y - global_prior.log_predict(work)))
            types[kind] = _TypeModel(kind="rate", n_obs=len(y), offset_log=offset)
            continue
        prior = LogLogPrior.fit(work, y, "work")
        params = lgbm_params(len(y), seed)
        data = lgb.Dataset(x, label=y, init_score=prior.log_predict(work), feature_name=names,
                           params={"min_data_in_bin": params["min_data_in_bin"], "verbosity": -1},
                           free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=rounds)
        types[kind] = _TypeModel(kind="lgbm", n_obs=len(y), prior=prior, booster=booster)
    latency = np.asarray([s.latency_ms for s in samples], dtype=float)
    partial = KernelPredictor(types=types, global_prior=global_prior, intercept_ms=0.0, per_kernel_ms=0.0,
                              floor_ms=0.0)
    sums = np.asarray([k.sum() for k in partial.kernel_predictions(samples)], dtype=float)
    counts = np.asarray([len(s.kernels) for s in samples], dtype=float)
    partial.kernel_scale, partial.intercept_ms, partial.per_kernel_ms = _fit_overhead(latency, sums, counts)
    partial.floor_ms = float(latency.min()) / 10.0
    partial.n_train, partial.seed = len(samples), int(seed)
    partial.params = {**lgbm_params(0, seed), "min_data_in_leaf": "max(2, min(20, n_obs // 10))",
                      "num_boost_round": rounds, "min_kernel_samples": MIN_KERNEL_SAMPLES}
    return partial


def train_kernel_predictor(samples: Sequence[KernelSample], *, seed: int = 0, calibrate: bool = True,
                           rounds: int = KERNEL_ROUNDS) -> KernelPredictor:
    """Fit a :class:`KernelPredictor` on ``samples`` (one platform's); deterministic in samples and seed.

    With ``calibrate`` (the default) a :data:`CV_FOLDS`-fold cross-validation
    first sets the interval from out-of-fold model-level residuals. Raises
    ``ValueError`` for fewer than 2 samples, non-positive latencies, or no
    profiled kernel time at all.
    """
    if len(samples) < 2:
        raise ValueError(f"need at least 2 kernel samples to train, got {len(samples)}")
    samples = _canonical(samples)
    if any(not (s.latency_ms > 0 and math.isfinite(s.latency_ms)) for s in samples):
        raise ValueError("every kernel sample needs a positive latency_ms")
    interval_log: Optional[float] = None
    if calibrate:
        k = min(CV_FOLDS, len(samples))
        fold = _folds(samples, k, seed)  # type: ignore[arg-type]  # reads model_sha256/platform_id only
        oof = np.empty(len(samples))
        for f in range(k):
            held = np.flatnonzero(fold == f)
            kept = [samples[i] for i in np.flatnonzero(fold != f)]
            oof[held] = _fit(kept, seed, rounds).predict([samples[i] for i in held])
        truth = np.asarray([s.latency_ms for s in samples], dtype=float)
        interval_log = _conformal_quantile(np.abs(np.log(oof / truth)), INTERVAL_LEVEL)
    predictor = _fit(samples, seed, rounds)
    predictor.interval_log = interval_log
    return predictor


# ---------------------------------------------------------------- evaluation


def _share(samples: Sequence[KernelSample], numerator: str, denominator: str) -> Optional[float]:
    ratios = [getattr(s, numerator) / getattr(s, denominator) for s in samples if getattr(s, denominator) > 0]
    return float(statistics.median(ratios)) if ratios else None


def _split_parts(train: Sequence[KernelSample], test: Sequence[KernelSample], seed: int) -> Dict[str, Any]:
    predictor = train_kernel_predictor(train, seed=seed, calibrate=True)
    pred, low, high = predictor.predict_interval(test)
    unseen = sorted({t for s in test for t in predictor.unseen_kernel_types(s)})
    return {"true": np.asarray([s.latency_ms for s in test], dtype=float), "predictor": pred, "low": low,
            "high": high, "interval_log": predictor.interval_log, "unseen": unseen}


def _report(parts: Mapping[str, Any], n_train: int, samples: Sequence[KernelSample]) -> Dict[str, Any]:
    true = parts["true"]
    metrics = evaluate(parts["predictor"], true)
    metrics["interval_coverage"] = _coverage(true, parts["low"], parts["high"])
    metrics["interval_level"] = INTERVAL_LEVEL
    return {
        "n_train": n_train,
        "n_test": int(true.size),
        "predictor": metrics,
        "kernel_time_share": _share(samples, "profiled_ms", "latency_ms"),
        "matched_share": _share(samples, "matched_ms", "profiled_ms"),
        "unseen_kernel_types": list(parts["unseen"]),
    }


def evaluate_kernel_split(train: Sequence[KernelSample], test: Sequence[KernelSample], *, seed: int = 0
                          ) -> Dict[str, Any]:
    """Metrics of a kernel predictor trained on ``train``, scored on ``test``.

    ``{"n_train", "n_test", "predictor": {acc_5, acc_10, mape, rmspe,
    spearman, n, interval_coverage, interval_level, interval_log},
    "kernel_time_share", "matched_share", "unseen_kernel_types"}``: the
    ``predictor`` entry has the shape of
    :func:`fleetmeter.modeler.train.evaluate_split`'s, so the two compare
    directly on the same split. ``kernel_time_share`` is the median over all
    the given models of profiled time / measured latency (below 1: overhead
    the profile does not see), ``matched_share`` the median share of
    profiled time attributed to kernels; ``unseen_kernel_types`` are test
    kernel types training never saw.
    """
    if not test:
        raise ValueError("nothing to evaluate on: the test set is empty")
    parts = _split_parts(train, test, seed)
    report = _report(parts, len(train), list(train) + list(test))
    report["predictor"]["interval_log"] = parts["interval_log"]
    return report


def evaluate_kernel_leave_family_out(samples: Sequence[KernelSample], *, seed: int = 0) -> Dict[str, Any]:
    """Leave-one-family-out: ``{"folds": {family: report}, "pooled": report or None}``.

    As :func:`fleetmeter.modeler.train.evaluate_leave_family_out`: each
    family's models predicted by a predictor trained on the other families;
    ``pooled`` scores them all together (``None`` with fewer than two families).
    """
    folds: Dict[str, Any] = {}
    pooled: Dict[str, List[np.ndarray]] = {}
    unseen: Set[str] = set()
    n_train = 0
    for family, train, test in split_leave_family_out(samples):  # type: ignore[arg-type]
        if len(train) < 2:
            continue
        parts = _split_parts(train, test, seed)
        folds[family] = _report(parts, len(train), test)
        for key in ("true", "predictor", "low", "high"):
            pooled.setdefault(key, []).append(np.asarray(parts[key], dtype=float))
        unseen.update(parts["unseen"])
        n_train = max(n_train, len(train))
    if not folds:
        return {"folds": {}, "pooled": None}
    joined: Dict[str, Any] = {k: np.concatenate(v) for k, v in pooled.items()}
    joined["unseen"] = sorted(unseen)
    report = _report(joined, n_train, samples)
    del report["n_train"]
    return {"folds": folds, "pooled": report}
