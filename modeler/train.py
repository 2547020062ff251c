"""Training a (platform, target): every candidate evaluated, the best trained on all samples, served.

Candidates are the model-level methods (:data:`~fleetmeter.modeler.methods.METHODS`, the baselines
included) and, with operator profiles, the kernel-level predictor (:mod:`~fleetmeter.modeler.kernels`).
:func:`run_train_task` scores them (:mod:`~fleetmeter.modeler.evaluation`), chooses the best
cross-validated ±10 % accuracy (ties by MAPE; a baseline too, saying so), trains it on every sample
(:func:`~fleetmeter.modeler.methods.train_predictor`) and fits the work fallback serving leans on
(:mod:`~fleetmeter.modeler.work_fallback`); the :class:`TrainResult` says which serves and why.

Splits. :func:`~fleetmeter.modeler.learners.split_random` (an exact 80/20 by default) and
:func:`~fleetmeter.modeler.learners.split_leave_family_out` (one fold per model family, to see how the
predictor does on an architecture family it never saw). Both depend only on
the samples' identities and the seed, never on their order or on the
random-number stream of a library version.

Fan-out. :func:`train_all` builds one :class:`TrainTask` per (platform,
target) and hands them to an injected ``map_fn(fn, items) -> list``
(serial by default). The controller passes one backed by Ray tasks (see
``fleetmeter.controller.engine``); tasks and results are plain picklable
data, and :func:`run_train_task` is a module-level function.

LightGBM is imported on first use (``pip install 'fleetmeter[controller]'``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .dataset import TARGETS, Sample, fingerprint
from .evaluation import evaluate_leave_family_out, evaluate_split, standing_warnings
from .learners import CV_FOLDS, split_random
from .methods import BASELINES, METHOD_KEYS, METHODS, train_predictor
from .metrics import noise_ceiling
from .predictor import Predictor
from .work_fallback import work_fallback_report

__all__ = [
    "MIN_TRAIN_SAMPLES",
    "TrainTask",
    "TrainResult",
    "samples_with",
    "run_train_task",
    "train_all",
]

log = logging.getLogger(__name__)

#: Fewer samples than this for a (platform, target) and :func:`train_all` skips it.
MIN_TRAIN_SAMPLES = 10

MapFn = Callable[[Callable[[Any], Any], Sequence[Any]], List[Any]]
ProgressFn = Callable[[int, int], None]


def samples_with(samples: Iterable[Sample], target: str) -> List[Sample]:
    """The samples that have a measured ``target``."""
    return [s for s in samples if s.values.get(target) is not None]


@dataclass(frozen=True)
class TrainTask:
    """One (platform, target) to train: plain data, so it can travel to a Ray worker."""

    platform_id: str
    target: str
    samples: Tuple[Sample, ...]
    seed: int = 0
    leave_family_out: bool = True
    #: ``KernelSample``s of this platform (latency only): a kernel-level predictor is evaluated too.
    kernel_samples: Tuple[Any, ...] = ()


@dataclass
class TrainResult:
    """What :func:`run_train_task` hands back: the serving predictor of one (platform, target).

    ``metrics`` holds ``random_split`` (:func:`evaluate_split` on an 80/20
    split, plus ``kernel`` — the kernel-level predictor on the same split —
    where operator profiles exist), ``leave_family_out``
    (:func:`evaluate_leave_family_out`, when asked for; ``pooled.kernel``
    likewise), ``noise_ceiling`` (of the platform's repeated measurements
    of this target) and ``interval`` (the shipped predictor's ``q`` and the
    coverage measured on the random split's test models). The serving
    predictor — ``predictor`` when ``granularity`` is ``"model"``,
    ``kernel_predictor`` when ``"kernel"`` (``predictor`` then holds the best
    model-level candidate, saved beside it as a transfer's source);
    ``chosen_because`` says why — is trained on all samples, after the
    evaluations. Both are ``None`` when ``skipped`` says why.
    """

    platform_id: str
    target: str
    predictor: Optional[Predictor]
    metrics: Dict[str, Any]
    fingerprint: str
    n_samples: int
    skipped: str = ""
    #: Which predictor serves: ``"model"`` (``predictor``) or ``"kernel"`` (``kernel_predictor``, with the best
    #: model-level candidate kept in ``predictor``: a transfer's source), and why.
    granularity: str = "model"
    chosen_because: str = ""
    kernel_predictor: Optional[Any] = None
    #: The method that serves (:data:`METHODS`, or ``"kernel"``).
    method: str = "lgbm"


def run_train_task(task: TrainTask) -> TrainResult:
    """Evaluate every candidate, then train the one that serves (platform, target) (a Ray task body).

    Candidates are :data:`METHODS` — the baselines included — and, with
    operator profiles, the kernel-level predictor; all are scored on the same
    held-out models of the random split, and the best (±10 % accuracy, ties
    by MAPE; :func:`_better`) is trained on every sample and serves, even
    when it is a baseline (``chosen_because`` says so). ``metrics["served"]``
    holds the served method's held-out numbers; ``metrics["warnings"]`` what
    a user should know about them (:func:`standing_warnings`).
    """
    samples = list(task.samples)
    fp = fingerprint(samples)
    ceiling = noise_ceiling({s.model_sha256: s.repeats.get(task.target, ()) for s in samples})
    metrics: Dict[str, Any] = {"noise_ceiling": ceiling}
    train, test = split_random(samples, task.seed)
    metrics["random_split"] = evaluate_split(train, test, task.target, seed=task.seed)
    metrics["work_fallback"] = work_fallback_report(train, test, samples, task.target, seed=task.seed)
    if task.leave_family_out:
        metrics["leave_family_out"] = evaluate_leave_family_out(samples, task.target, seed=task.seed)
    kernel_note = "no kernel-level data (no operator profiles)"
    if task.kernel_samples and task.target == "latency_ms":
        kernel_note = _compare_kernel_level(task, samples, metrics)
    # Every candidate trained on all samples; its cross-validation (out-of-fold, every sample held out
    # once: lower variance than one 80/20 split) picks the model-level method.
    candidates = {m: train_predictor(samples, task.target, seed=task.seed, method=m, select=True) for m in METHODS}
    metrics["cross_validation"] = {METHOD_KEYS[m]: p.cv for m, p in candidates.items()}
    key, because = _choose(metrics["cross_validation"], metrics["random_split"], kernel_note)
    granularity = "kernel" if key == "kernel" else "model"
    method = "kernel" if key == "kernel" else next(m for m, k in METHOD_KEYS.items() if k == key)
    kernel_predictor = predictor = None
    if granularity == "kernel":
        from .kernels import train_kernel_predictor

        kernel_predictor = train_kernel_predictor(list(task.kernel_samples), seed=task.seed)
        interval_log, level = kernel_predictor.interval_log, kernel_predictor.interval_level
        # the best model-level candidate is kept beside it: what a transfer to a new platform uses as a
        # source (a kernel-level predictor needs a profile of every model, a transfer needs graphs only)
        model_key, _ = _choose(metrics["cross_validation"],
                               {k: v for k, v in metrics["random_split"].items() if k != "kernel"}, kernel_note)
        predictor = candidates[next(m for m, k in METHOD_KEYS.items() if k == model_key)]
    else:
        predictor = candidates[method]
        interval_log, level = predictor.interval_log, predictor.interval_level
    served_random = metrics["random_split"].get(key) or {}
    pooled = (metrics.get("leave_family_out") or {}).get("pooled") or {}
    metrics["served"] = {"method": method, "granularity": granularity, "random_split": served_random,
                         "leave_family_out": pooled.get(key)}
    metrics["interval"] = {
        "level": level,
        "log_half_width": interval_log,
        "factor": math.exp(interval_log) if interval_log is not None else None,
        "coverage_on_held_out": served_random.get("interval_coverage"),
        "coverage_leave_family_out": (pooled.get(key) or {}).get("interval_coverage"),
    }
    metrics["warnings"] = standing_warnings(metrics)
    log.info("%s/%s: %s serves (%s)", task.platform_id, task.target, method, because)
    return TrainResult(platform_id=task.platform_id, target=task.target, predictor=predictor, metrics=metrics,
                       fingerprint=fp, n_samples=len(samples), granularity=granularity, chosen_because=because,
                       kernel_predictor=kernel_predictor, method=method)


def _better(kernel: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    """The first wins on a higher ±10 % accuracy, ties broken by a lower MAPE."""
    k10, m10 = kernel.get("acc_10") or 0.0, model.get("acc_10") or 0.0
    if k10 != m10:
        return k10 > m10
    return (kernel.get("mape") or math.inf) < (model.get("mape") or math.inf)


def _blend(cv: Mapping[str, Any]) -> Dict[str, Any]:
    """A candidate's cross-validated ±10 % accuracy and MAPE: with family folds *and* random folds, their
    mean (a predictor serves models like its training ones and new families alike), else as measured."""
    other = cv.get("random_folds") or {}
    if not other:
        return dict(cv)
    return {k: ((cv.get(k) or 0.0) + (other.get(k) or 0.0)) / 2.0 for k in ("acc_10", "mape")}


def _choose(cv: Mapping[str, Any], rnd: Mapping[str, Any], kernel_note: str) -> Tuple[str, str]:
    """The report key of the candidate that serves, and why.

    Model-level methods compete on their cross-validation (``cv``: out-of-fold
    metrics over every sample; with family folds, the mean of those and random
    folds' — :func:`_blend`); the winner then meets the kernel-level
    predictor, when there is one, on the random split's held-out models
    (``rnd``), where both were scored on the same models.
    """
    keys = [METHOD_KEYS[m] for m in METHODS if cv.get(METHOD_KEYS[m])]
    if not keys:  # too few samples to cross-validate: the held-out split decides
        cv = rnd
        keys = [METHOD_KEYS[m] for m in METHODS if METHOD_KEYS[m] in rnd]
    scored = {k: _blend(cv[k]) for k in keys}
    best = keys[0]
    for key in keys[1:]:
        if _better(scored[key], scored[best]):
            best = key
    folds = (cv[best].get("folds") or "random") if cv is not rnd else None
    if folds == "family" and cv[best].get("random_folds"):
        folds = "the mean over family and random folds"
    elif folds:
        folds = f"{folds} folds"
    where = (f"{CV_FOLDS}-fold cross-validation ({folds}, {cv[best].get('n')} models)" if folds
             else f"random split, {rnd.get('n_test')} held-out models")
    listing = ", ".join(f"{k} {(scored[k].get('acc_10') or 0):.3f}/{(scored[k].get('mape') or math.inf):.3f}"
                        for k in keys)
    if "kernel" in rnd:
        reference = (rnd.get("model_on_profiled") or {}).get(best) or rnd.get(best) or {}
        k = rnd["kernel"]
        versus = (f"; on the random split's held-out models kernel-level {(k.get('acc_10') or 0):.3f}/"
                  f"{(k.get('mape') or math.inf):.3f} vs {best} {(reference.get('acc_10') or 0):.3f}/"
                  f"{(reference.get('mape') or math.inf):.3f}")
        if _better(k, reference):
            return "kernel", f"kernel had the best ±10 % accuracy / MAPE{versus} (model-level, {where}: {listing})"
        listing += versus
    name = next((m for m, key in METHOD_KEYS.items() if key == best), best)
    role = "baseline " if name in BASELINES else ""
    because = f"{role}{name} had the best ±10 % accuracy / MAPE on {where}: {listing}"
    if "kernel" not in rnd:
        because += f" ({kernel_note})"
    return best, because


def _compare_kernel_level(task: TrainTask, samples: Sequence[Sample], metrics: Dict[str, Any]) -> str:
    """Evaluate the kernel-level predictor on the random split's held-out models (into ``metrics``).

    Both are scored on the same held-out models: the hash-based splits put a
    model on the same side whatever else is in the set, and when not every
    model has a profile the model-level candidates are re-evaluated on the
    profiled ones (``random_split.model_on_profiled``). Returns a note for
    ``chosen_because`` when kernel-level could not compete.
    """
    from .kernels import evaluate_kernel_leave_family_out, evaluate_kernel_split

    kernel = list(task.kernel_samples)
    if len(kernel) < MIN_TRAIN_SAMPLES:
        return f"only {len(kernel)} profiled models, need {MIN_TRAIN_SAMPLES} for kernel-level"
    k_train, k_test = split_random(kernel, task.seed)
    if not k_test or len(k_train) < 2:
        return "too few profiled models for a kernel-level evaluation"
    report = evaluate_kernel_split(k_train, k_test, seed=task.seed)
    rnd = metrics["random_split"]
    rnd["kernel"] = {**report["predictor"], "kernel_time_share": report["kernel_time_share"],
                     "matched_share": report["matched_share"], "unseen_kernel_types": report["unseen_kernel_types"]}
    profiled = {s.model_sha256 for s in kernel}
    if profiled != {s.model_sha256 for s in samples}:
        subset = [s for s in samples if s.model_sha256 in profiled]
        m_train, m_test = split_random(subset, task.seed)
        rnd["model_on_profiled"] = evaluate_split(m_train, m_test, task.target, seed=task.seed) if m_test else {}
    if task.leave_family_out and metrics.get("leave_family_out", {}).get("pooled"):
        pooled = evaluate_kernel_leave_family_out(kernel, seed=task.seed)["pooled"]
        if pooled:
            metrics["leave_family_out"]["pooled"]["kernel"] = pooled["predictor"]
    return ""


def _serial_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> List[Any]:
    return [fn(item) for item in items]


def train_all(
    samples_by_platform: Mapping[str, Sequence[Sample]],
    targets: Sequence[str] = TARGETS,
    map_fn: Optional[MapFn] = None,
    *,
    seed: int = 0,
    leave_family_out: bool = True,
    min_samples: int = MIN_TRAIN_SAMPLES,
    progress: Optional[ProgressFn] = None,
    chunk_size: Optional[int] = None,
    kernel_samples: Optional[Mapping[str, Sequence[Any]]] = None,
) -> List[TrainResult]:
    """One :class:`TrainResult` per (platform, target), platforms sorted, targets in given order.

    Each (platform, target) uses the platform's samples that measured that
    target; one with fewer than ``min_samples`` is not trained (``skipped``
    says so). The rest go to ``map_fn(run_train_task, tasks)`` in chunks of
    ``chunk_size`` (default: 1 when serial, 16 with a ``map_fn``);
    ``progress(done, total)`` is called before the first and after each chunk.
    A ``map_fn`` must return results in the order of its items.
    ``kernel_samples`` (platform -> ``KernelSample``s, see
    :mod:`~fleetmeter.modeler.kernels`) adds a kernel-level predictor to the
    latency evaluation of those platforms; the better one on held-out models serves.
    """
    for target in targets:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    kernel_samples = kernel_samples or {}
    slots: List[Optional[TrainResult]] = []
    tasks: List[Tuple[int, TrainTask]] = []
    for platform_id in sorted(samples_by_platform):
        for target in targets:
            chosen = samples_with(samples_by_platform[platform_id], target)
            if len(chosen) < min_samples:
                slots.append(TrainResult(platform_id=platform_id, target=target, predictor=None, metrics={},
                                         fingerprint=fingerprint(chosen), n_samples=len(chosen),
                                         skipped=f"{len(chosen)} samples with {target}, need {min_samples}"))
                continue
            kernels = tuple(kernel_samples.get(platform_id, ())) if target == "latency_ms" else ()
            tasks.append((len(slots), TrainTask(platform_id, target, tuple(chosen), seed, leave_family_out,
                                                kernels)))
            slots.append(None)
    run = map_fn or _serial_map
    step = chunk_size or (1 if map_fn is None else 16)
    if progress:
        progress(0, len(tasks))
    for start in range(0, len(tasks), step):
        chunk = tasks[start:start + step]
        results = run(run_train_task, [t for _, t in chunk])
        if len(results) != len(chunk):
            raise RuntimeError(f"map_fn returned {len(results)} results for {len(chunk)} tasks")
        for (slot, _), result in zip(chunk, results):
            slots[slot] = result
        if progress:
            progress(min(start + step, len(tasks)), len(tasks))
    done = [r for r in slots if r is not None]
    log.info("trained %d predictors (%d skipped)", sum(1 for r in done if not r.skipped),
             sum(1 for r in done if r.skipped))
    return done
